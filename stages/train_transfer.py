"""Stage train_transfer: fine-tune an ImageNet backbone (params `model`) with a fresh landmark head."""
from __future__ import annotations

import json

from landmarks.models import FREEZE_POLICIES, WeightsUnavailable, available_models, backbone_data_config
from landmarks.train import train_classifier
from landmarks.transforms import AUGMENT_PRESETS
from stages.common import ConfigError, check_choice, load_params
from stages.train_common import train_arguments, train_config

STAGE = "train_transfer"
NORMALIZE = ("backbone", "dataset")


def resolve_preprocess(model: str, p: dict, stats: dict) -> dict:
    """image_size, crop_fraction, mean and std: the backbone's own by default (as timm's resolve_data_config
    gives them), the dataset's statistics for `normalize: dataset` or a backbone without pretrained weights."""
    native = backbone_data_config(model) or {}
    size = p["image_size"]
    if size == "native":
        size = native.get("image_size", 224)
    elif isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024:
        raise ConfigError(f"{STAGE}.image_size={size!r} is not valid; use native or an integer in 32..1024")
    normalize = check_choice(f"{STAGE}.normalize", p["normalize"], NORMALIZE)
    own = normalize == "backbone" and bool(p["pretrained"]) and "mean" in native
    source = native if own else stats
    return {"image_size": size, "crop_fraction": native.get("crop_fraction", 0.875), "mean": source["mean"], "std": source["std"]}


def main(argv: list[str] | None = None) -> None:
    args = train_arguments(__doc__).parse_args(argv)
    params = load_params()
    p = params[STAGE]
    model = check_choice("model", params["model"], [m for m in available_models() if m not in ("paper", "vgg")])
    freeze = check_choice(f"{STAGE}.freeze", p["freeze"], FREEZE_POLICIES)
    augment = check_choice(f"{STAGE}.augment", p["augment"], AUGMENT_PRESETS)
    # A fully frozen backbone gives the same features every epoch: compute them once.
    config = train_config(p, seed=params["seed"], stage=STAGE, cache_features=freeze == "all")
    pre = resolve_preprocess(model, p, json.loads(open(args.stats).read()))
    try:
        train_classifier(
            arch=model,
            arch_kwargs={"pretrained": bool(p["pretrained"]), "freeze": freeze, "dropout": p["dropout"]},
            splits_dir=args.splits, images_dir=args.images, mean=pre["mean"], std=pre["std"],
            image_size=pre["image_size"], crop_fraction=pre["crop_fraction"], augment=augment, config=config, out_path=args.out,
            live_dir=args.live, resume_path=args.resume, params={"seed": params["seed"], "model": model, **p},
        )
    except WeightsUnavailable as e:
        raise ConfigError(str(e)) from None


if __name__ == "__main__":
    main()
