"""What the two training stages share: their command-line paths and the run itself."""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

from landmarks.devices import select_device
from landmarks.models import WeightsUnavailable
from landmarks.params import Params
from landmarks.train import train_classifier
from landmarks.train_spec import TrainSpec
from stages.common import ConfigError, stage_params


def train_arguments(description: str) -> argparse.ArgumentParser:
    """The command-line paths both training stages take (their values are written in dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--splits", required=True, help="folder with train/val/test.csv and classes.csv")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--stats", required=True, help="JSON with the train split's mean and std")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="dvclive folder for per-epoch metrics and plots")
    parser.add_argument("--resume", default=None, help="state file that lets a killed run continue")
    return parser


def run_training_stage(description: str, stage: str, make_spec: Callable[[Params, dict], TrainSpec],
                       argv: list[str] | None = None) -> None:
    """Parse the paths, build the spec from the checked params and the dataset statistics, train."""
    args = train_arguments(description).parse_args(argv)
    params = stage_params()
    with open(args.stats) as f:
        spec = make_spec(params, json.load(f))
    check_environment(spec, stage)
    try:
        train_classifier(spec, splits_dir=args.splits, images_dir=args.images, out_path=args.out,
                         live_dir=args.live, resume_path=args.resume)
    except WeightsUnavailable as e:
        raise ConfigError(str(e)) from None


def check_environment(spec: TrainSpec, stage: str) -> None:
    """Stop with one line, before any data or model is set up, when this machine cannot run the spec."""
    try:
        select_device(spec.device)
    except ValueError as e:
        raise ConfigError(f"{stage}.{e}") from None
    world = int(os.environ.get("WORLD_SIZE", 1))  # under torchrun each process takes batch_size // world
    if spec.batch_size % world:
        raise ConfigError(f"{stage}.batch_size={spec.batch_size} is not valid; it must be divisible by the number of "
                          f"processes ({world})")
