"""What the two training stages share: their TrainConfig and their command-line paths."""
from __future__ import annotations

import argparse
from typing import Any

from landmarks.train import TrainConfig
from stages.common import ConfigError


def train_config(section: dict[str, Any], *, seed: int, stage: str, cache_features: bool = False):
    """Build a TrainConfig from a training stage's params section; bad values stop with a one-line error."""
    keys = ("epochs", "batch_size", "optimizer", "lr", "backbone_lr", "momentum", "weight_decay", "scheduler",
            "warmup_epochs", "step_size", "gamma", "label_smoothing", "device", "num_workers")
    try:
        return TrainConfig(**{k: section[k] for k in keys if k in section}, seed=seed, cache_features=cache_features)
    except ValueError as e:
        raise ConfigError(f"{stage}.{e}") from None


def train_arguments(description: str):
    """The command-line paths both training stages take (their values are written in dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--splits", required=True, help="folder with train/val/test.csv and classes.csv")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--stats", required=True, help="JSON with the train split's mean and std")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="dvclive folder for per-epoch metrics and plots")
    parser.add_argument("--resume", default=None, help="state file that lets a killed run continue")
    return parser
