"""Stage evaluate: per model, the tagging threshold (chosen on the validation split, distractors
included), test metrics, confusion records and figures; tagging.json for the last model (the exported one)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from landmarks.assessment import choose, tagging_record, test_metrics
from landmarks.checkpoint import load_checkpoint
from landmarks.data import read_split
from landmarks.eval_reports import plot_train_batch, write_model_reports
from landmarks.files import sha256_file
from landmarks.inference import SplitResult, run_split
from landmarks.openset import build_tagger
from landmarks.predictor_file import plain_json
from stages.common import log, stage_params, write_json

DIGITS = 5  # metrics.json precision: enough to tell 1 image in 100k apart
COLUMNS = ("top1", "top5", "gap", "coverage", "tag_precision", "distractor_tag_rate", "unknown_landmark_tag_rate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", required=True, help="checkpoints to evaluate; the last one gets tagging.json")
    parser.add_argument("--names", nargs="+", required=True, help="one short name per model (used in file names)")
    parser.add_argument("--splits", required=True, help="folder with train/val/test.csv")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--metrics", required=True, help="JSON with the headline test metrics of every model")
    parser.add_argument("--tagging", required=True, help="JSON with the tagging decision of the last model")
    parser.add_argument("--confusion", required=True, help="folder for DVC confusion records, <name>.json")
    parser.add_argument("--figures", required=True, help="folder for the PNG figures")
    parser.add_argument("--out", required=True, help="folder for per-class and per-image CSVs")
    parser.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if len(args.models) != len(args.names):
        parser.error(f"{len(args.models)} --models but {len(args.names)} --names; give one name per model")
    if any(not re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in args.names) or len(set(args.names)) != len(args.names):
        parser.error(f"--names must be unique and use only letters, digits, '_', '.', '-': {args.names}")
    return args


def predict(tagger: Any, ckpt: dict[str, Any], split: str, args: argparse.Namespace, batch_size: int) -> SplitResult:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    class_ids = [c["landmark_id"] for c in ckpt["classes"]]
    result = run_split(tagger, read_split(args.splits, split), args.images, class_ids, ckpt["preprocess"],
                       batch_size=batch_size, device=device, desc=split)
    for path, err in list(result.unreadable.items())[:10]:
        log(f"  unreadable {split} image {path}: {err}")
    if not result.known.any():
        raise SystemExit(f"error: no readable landmark photos in the {split} split")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = stage_params(args.params)
    batch_size, tagging = params.evaluate.batch_size, params.tagging
    metrics: dict[str, dict[str, Any]] = {}
    for path, name in zip(args.models, args.names):
        log(f"evaluating {name} ({path})")
        model, ckpt = load_checkpoint(path)
        tagger = build_tagger(model, ckpt, score=tagging.score, k=tagging.neighbours)
        val, test = (predict(tagger, ckpt, split, args, batch_size) for split in ("val", "test"))
        choice = choose(val, tagger, tagging)
        found = test_metrics(test, tagger, tagging, choice.threshold)
        # the threshold stays exact: rounded, "tag nothing" (just above 1) would read as 1.0
        metrics[name] = {**{k: round(v, DIGITS) if isinstance(v, float) and k != "threshold" else v
                            for k, v in found.items()},
                         "num_unreadable": len(test.unreadable)}
        write_model_reports(name, test, ckpt["classes"], choice.threshold,
                            out=Path(args.out), confusion=Path(args.confusion), figures=Path(args.figures))
        record = {"model": name, "model_sha256": sha256_file(path),
                  **tagging_record(choice, found, tagging, num_val=len(val.labels))}
        if not choice.reached:
            log(f"  WARNING: {name} reaches no threshold with precision >= {tagging.precision} and at most "
                f"{tagging.max_false_tag_rate} of negatives tagged on the validation split; it would tag nothing")
    write_json(args.tagging, plain_json(record))
    plot_train_batch(ckpt, args.splits, args.images, Path(args.figures) / "train_batch.png")
    write_json(args.metrics, plain_json(metrics))

    print(f"{'model':<12}" + "".join(f"{c[:12]:>13}" for c in COLUMNS))
    for name, m in metrics.items():
        print(f"{name:<12}" + "".join(f"{m[c]:>13.4f}" if isinstance(m[c], float) else f"{str(m[c]):>13}" for c in COLUMNS))
    print(f"tagging ({record['model']}): {record['score']} score >= {record['threshold']:.4f}; val {record['val']}; "
          f"test {record['test']}")


if __name__ == "__main__":
    main()
