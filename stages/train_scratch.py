"""Stage train_scratch: a CNN trained from random weights (the original work's baseline)."""
from __future__ import annotations

import json

from landmarks.models import SCRATCH_ARCHS
from landmarks.train import train_classifier
from landmarks.transforms import AUGMENT_PRESETS
from stages.common import check_choice, load_params
from stages.train_common import train_arguments, train_config

STAGE = "train_scratch"


def main(argv: list[str] | None = None) -> None:
    args = train_arguments(__doc__).parse_args(argv)
    params = load_params()
    p = params[STAGE]
    arch = check_choice(f"{STAGE}.arch", p["arch"], SCRATCH_ARCHS)
    augment = check_choice(f"{STAGE}.augment", p["augment"], AUGMENT_PRESETS)
    config = train_config(p, seed=params["seed"], stage=STAGE)
    stats = json.loads(open(args.stats).read())
    train_classifier(
        arch=arch, arch_kwargs={"dropout": p["dropout"], "image_size": p["image_size"]},
        splits_dir=args.splits, images_dir=args.images, mean=stats["mean"], std=stats["std"],
        image_size=p["image_size"], augment=augment, config=config, out_path=args.out,
        live_dir=args.live, resume_path=args.resume, params={"seed": params["seed"], **p},
    )


if __name__ == "__main__":
    main()
