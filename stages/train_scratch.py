"""Stage train_scratch: a CNN trained from random weights (the original work's baseline)."""
from __future__ import annotations

from landmarks.train_spec import for_scratch
from stages.train_common import run_training_stage


def main(argv: list[str] | None = None) -> None:
    run_training_stage(__doc__, "train_scratch", lambda params, stats: for_scratch(params.train_scratch, seed=params.seed, stats=stats), argv)


if __name__ == "__main__":
    main()
