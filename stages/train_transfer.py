"""Stage train_transfer: fine-tune an ImageNet backbone (params `model`) with a fresh landmark head."""
from __future__ import annotations

import json

from landmarks.models import FREEZE_POLICIES, WeightsUnavailable, available_models
from landmarks.train import train_classifier
from landmarks.transforms import AUGMENT_PRESETS
from stages.common import ConfigError, check_choice, load_params
from stages.train_common import train_arguments, train_config

STAGE = "train_transfer"


def main(argv: list[str] | None = None) -> None:
    args = train_arguments(__doc__).parse_args(argv)
    params = load_params()
    p = params[STAGE]
    model = check_choice("model", params["model"], [m for m in available_models() if m not in ("paper", "vgg")])
    freeze = check_choice(f"{STAGE}.freeze", p["freeze"], FREEZE_POLICIES)
    augment = check_choice(f"{STAGE}.augment", p["augment"], AUGMENT_PRESETS)
    # A fully frozen backbone gives the same features every epoch: compute them once.
    config = train_config(p, seed=params["seed"], stage=STAGE, cache_features=freeze == "all")
    stats = json.loads(open(args.stats).read())
    try:
        train_classifier(
            arch=model,
            arch_kwargs={"pretrained": bool(p["pretrained"]), "freeze": freeze, "dropout": p["dropout"]},
            splits_dir=args.splits, images_dir=args.images, mean=stats["mean"], std=stats["std"],
            image_size=p["image_size"], augment=augment, config=config, out_path=args.out,
            live_dir=args.live, resume_path=args.resume, params={"seed": params["seed"], "model": model, **p},
        )
    except WeightsUnavailable as e:
        raise ConfigError(str(e)) from None


if __name__ == "__main__":
    main()
