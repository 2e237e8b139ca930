"""What every stage shares: reading its own slice of params.yaml and failing fast on bad values."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


class ConfigError(SystemExit):
    """A bad param value: printed as one line naming the value and what is allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml (DVC's `-S` overrides are already written into it by `dvc exp run`)."""
    with open(path) as f:
        return yaml.safe_load(f) or {}


def check_choice(key: str, value: Any, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else stop with a one-line error naming `key`."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write pretty JSON, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def log(message: str) -> None:
    """Stage progress messages go to stderr, next to tqdm's bars."""
    print(message, file=sys.stderr, flush=True)


def train_config(section: dict[str, Any], *, seed: int, stage: str, cache_features: bool = False):
    """Build a TrainConfig from a training stage's params section; bad values stop with a one-line error."""
    from landmarks.train import TrainConfig  # torch is only imported by the stages that train

    keys = ("epochs", "batch_size", "optimizer", "lr", "backbone_lr", "momentum", "weight_decay", "scheduler",
            "warmup_epochs", "step_size", "gamma", "label_smoothing", "device", "num_workers")
    try:
        return TrainConfig(**{k: section[k] for k in keys if k in section}, seed=seed, cache_features=cache_features)
    except ValueError as e:
        raise ConfigError(f"{stage}.{e}") from None


def train_arguments(description: str):
    """The command-line paths both training stages take (their values are written in dvc.yaml)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--splits", required=True, help="folder with train/val/test.csv and classes.csv")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--stats", required=True, help="JSON with the train split's mean and std")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="dvclive folder for per-epoch metrics and plots")
    parser.add_argument("--resume", default=None, help="state file that lets a killed run continue")
    return parser
