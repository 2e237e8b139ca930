"""The training spec: everything one training run depends on, in one frozen record.

It is the only argument of `train_classifier` besides paths, the checkpoint's `params` record, and
(with the data's digest) the fingerprint that lets a killed run resume. The two training stages
build it from their typed params: `for_scratch` and `for_transfer`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from landmarks.models import backbone_data_config
from landmarks.params import ScratchParams, TrainParams, TransferParams
from landmarks.transforms import CROP_FRACTION, preprocess_config


@dataclass(frozen=True)
class TrainSpec:
    """One training run: the architecture, its inputs and the optimisation."""

    arch: str
    pretrained: bool
    freeze: str  # none | early | all (all: train the head on features computed once)
    dropout: float
    image_size: int
    crop_fraction: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    backbone_lr: float | None  # None: one learning rate for everything
    momentum: float
    weight_decay: float
    scheduler: str
    warmup_epochs: float
    step_size: int
    gamma: float
    label_smoothing: float
    device: str
    num_workers: int | str
    seed: int
    compile: bool = False  # torch.compile the model (a GPU's first steps pay for it; later ones run faster)
    cache_features: bool = False  # the backbone is frozen: compute its features once, train only the head

    @property
    def augment_used(self) -> str:
        """Cached features are computed once, from un-augmented images."""
        return "none" if self.cache_features else self.augment

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """What landmarks.models.build_model takes besides the name and the number of classes."""
        return {"pretrained": self.pretrained, "freeze": self.freeze, "dropout": self.dropout, "image_size": self.image_size}

    @property
    def preprocess(self) -> dict[str, Any]:
        return preprocess_config(image_size=self.image_size, mean=list(self.mean), std=list(self.std),
                                 crop_fraction=self.crop_fraction)

    def record(self) -> dict[str, Any]:
        """Plain JSON types, for the checkpoint (loadable with weights_only=True) and the fingerprint."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "augment_used": self.augment_used}

    def fingerprint(self, **extra: Any) -> str:
        """Identifies a run (with e.g. the data digest and the world size), so a resume state is only picked up by it."""
        blob = json.dumps({"spec": self.record(), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _optimisation(p: TrainParams, seed: int) -> dict[str, Any]:
    keys = ("augment", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "scheduler", "warmup_epochs",
            "step_size", "gamma", "label_smoothing", "device", "num_workers", "compile")
    return {**{k: getattr(p, k) for k in keys}, "seed": seed}


def for_scratch(p: ScratchParams, *, seed: int, stats: dict[str, Any]) -> TrainSpec:
    """train_scratch: random weights, normalised with the training split's statistics."""
    return TrainSpec(arch=p.arch, pretrained=False, freeze="none", dropout=p.dropout, image_size=p.image_size,
                     crop_fraction=CROP_FRACTION, mean=tuple(stats["mean"]), std=tuple(stats["std"]),
                     backbone_lr=None, **_optimisation(p, seed))  # nothing frozen, nothing to cache


def for_transfer(p: TransferParams, *, model: str, seed: int, stats: dict[str, Any]) -> TrainSpec:
    """train_transfer: the backbone's own size, crop and normalisation by default (as timm's
    resolve_data_config gives them); the dataset's statistics for `normalize: dataset` or without
    pretrained weights."""
    native = backbone_data_config(model) or {}
    size = native.get("image_size", 224) if p.image_size == "native" else p.image_size
    own = p.normalize == "backbone" and p.pretrained and "mean" in native
    source = native if own else stats
    return TrainSpec(arch=model, pretrained=p.pretrained, freeze=p.freeze, dropout=p.dropout, image_size=size,
                     crop_fraction=native.get("crop_fraction", CROP_FRACTION), mean=tuple(source["mean"]),
                     std=tuple(source["std"]), backbone_lr=p.backbone_lr, cache_features=p.freeze == "all",
                     **_optimisation(p, seed))
