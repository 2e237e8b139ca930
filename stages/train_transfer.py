"""Stage train_transfer: a fresh landmark head on an ImageNet backbone (params `model`), frozen or fine-tuned."""
from __future__ import annotations

from landmarks.models import available_models
from landmarks.params import SCRATCH_ARCHS, Params
from landmarks.train_spec import TrainSpec, for_transfer
from stages.common import check_choice
from stages.train_common import run_training_stage


def spec(params: Params, stats: dict) -> TrainSpec:
    model = check_choice("model", params.model, [m for m in available_models() if m not in SCRATCH_ARCHS])
    return for_transfer(params.train_transfer, model=model, seed=params.seed, stats=stats)


def main(argv: list[str] | None = None) -> None:
    run_training_stage(__doc__, "train_transfer", spec, argv)


if __name__ == "__main__":
    main()
