"""Stage evaluate: test-split metrics, confusion records and figures per model, and the tagging threshold.

The tagging threshold is chosen on the VALIDATION split for the last model given (the one that
is exported), then its precision and coverage are measured on the test split.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from landmarks.checkpoint import load_checkpoint
from landmarks.data import LandmarkDataset, image_path, read_split
from landmarks.evaluation import (
    confusion_matrix, most_confident_mistakes, per_class_metrics, precision_coverage, predict_dataset,
    select_threshold, summarize,
)
from landmarks.export import plain_json
from landmarks.imageio import ImageError, decode_image, sha256_file
from landmarks.reports import denormalize, plot_confusion, plot_gallery
from landmarks.transforms import AUGMENT_PRESETS, eval_transform, train_transform
from stages.common import ConfigError, load_params, log, write_json

DIGITS = 5  # metrics.json precision: enough to tell 1 image in 100k apart
MISTAKES_SHOWN = 16
BATCH_SHOWN = 16
FIGURE_SEED = 0  # the augmented training batch figure is the same on every run


class ReadableDataset(LandmarkDataset):
    """LandmarkDataset that records unreadable images instead of stopping the evaluation.

    The record lives in this object, so it is only complete with num_workers=0 (as used here).
    """

    def __init__(self, *args: Any, image_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_size = image_size
        self.unreadable: dict[int, str] = {}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            return super().__getitem__(i)
        except (ImageError, OSError) as e:
            self.unreadable[i] = str(e)
            return torch.zeros(3, self.image_size, self.image_size), self.labels[i]


def display_names(classes: list[dict[str, Any]]) -> list[str]:
    """A unique, readable label per class: its name, with the landmark id added where names repeat."""
    names = [str(c.get("name") or c["landmark_id"]) for c in classes]
    counts = pd.Series(names).value_counts()
    return [f"{n} ({c['landmark_id']})" if counts[n] > 1 else n for n, c in zip(names, classes)]


def predict_split(
    model: torch.nn.Module, ckpt: dict[str, Any], split: str, args: argparse.Namespace, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, ReadableDataset]:
    """(probs, labels, dataset) for one split; unreadable images are counted, logged and left out of both arrays."""
    class_ids = [c["landmark_id"] for c in ckpt["classes"]]
    pre = ckpt["preprocess"]
    dataset = ReadableDataset(read_split(args.splits, split), args.images, class_ids, eval_transform(**pre),
                              image_size=pre["image_size"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    probs = predict_dataset(model, loader, device, desc=split)
    keep = np.array([i not in dataset.unreadable for i in range(len(dataset))], dtype=bool)
    for i, err in sorted(dataset.unreadable.items())[:10]:
        log(f"  unreadable {split} image {dataset.paths[i]}: {err}")
    if dataset.unreadable:
        log(f"  {len(dataset.unreadable)} {split} images could not be read and are left out")
    if not keep.any():
        raise SystemExit(f"error: no readable images in the {split} split")
    return probs[keep], np.asarray(dataset.labels)[keep], dataset


def write_model_reports(
    name: str, probs: np.ndarray, labels: np.ndarray, dataset: ReadableDataset, ckpt: dict[str, Any], args: argparse.Namespace
) -> None:
    """Per-class CSV, per-image predictions, DVC confusion records and the figures of one model."""
    classes = ckpt["classes"]
    labels_shown = display_names(classes)
    paths = [p for i, p in enumerate(dataset.paths) if i not in dataset.unreadable]
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stats = per_class_metrics(labels, pred, len(classes))
    pd.DataFrame({
        "landmark_id": [c["landmark_id"] for c in classes],
        "name": [c.get("name", "") for c in classes],
        **{k: stats[k] for k in ("precision", "recall", "f1", "support")},
    }).to_csv(out / f"per_class_{name}.csv", index=False, float_format="%.5f")
    pd.DataFrame({
        "path": [str(p) for p in paths],
        "landmark_id": [classes[t]["landmark_id"] for t in labels],
        "predicted_landmark_id": [classes[p]["landmark_id"] for p in pred],
        "confidence": conf,
        "correct": pred == labels,
    }).to_csv(out / f"predictions_{name}.csv", index=False, float_format="%.6f")

    records = [{"actual": labels_shown[t], "predicted": labels_shown[p]} for t, p in zip(labels, pred)]
    write_json(Path(args.confusion) / f"{name}.json", records)

    figures = Path(args.figures)
    plot_confusion(confusion_matrix(labels, pred, len(classes)), labels_shown, figures / f"confusion_{name}.png",
                   title=f"{name}: confusion on the test split (rows = actual; colour = share of the row)")
    images, captions = [], []
    for i in most_confident_mistakes(probs, labels, MISTAKES_SHOWN):
        img = decode_image(paths[i])
        img.thumbnail((256, 256))
        images.append(img)
        captions.append(f"true: {labels_shown[labels[i]][:30]}\npred: {labels_shown[pred[i]][:30]} ({conf[i]:.2f})")
    plot_gallery(images, captions, figures / f"mistakes_{name}.png",
                 title=f"{name}: the {len(images)} most confident mistakes on the test split")


def plot_train_batch(ckpt: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """A de-normalised grid of augmented training images, as the model saw them."""
    pre = ckpt["preprocess"]
    augment = (ckpt.get("params") or {}).get("augment", "none")
    if augment not in AUGMENT_PRESETS:
        log(f"  checkpoint augment={augment!r} is unknown; showing the eval transform")
        augment = "none"
    transform = train_transform(**pre, augment=augment)
    frame = read_split(args.splits, "train")
    names = dict(zip((c["landmark_id"] for c in ckpt["classes"]), display_names(ckpt["classes"])))
    rng = np.random.default_rng(FIGURE_SEED)
    torch.manual_seed(FIGURE_SEED)
    rows = frame.iloc[rng.permutation(len(frame))]
    images, captions = [], []
    for lid, iid in zip(rows["landmark_id"], rows["id"]):
        if len(images) == BATCH_SHOWN:
            break
        try:
            x = transform(decode_image(image_path(args.images, lid, iid)))
        except (ImageError, OSError):
            continue
        images.append(denormalize(x.numpy(), pre["mean"], pre["std"]))
        captions.append(names.get(int(lid), str(lid))[:34])
    plot_gallery(images, captions, path, title=f"a training batch (augment={augment})")


def rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, DIGITS) if isinstance(v, float) else v for k, v in metrics.items()}


def tagging_record(
    name: str, path: str, model: torch.nn.Module, ckpt: dict[str, Any], test_probs: np.ndarray, test_labels: np.ndarray,
    target: float, args: argparse.Namespace, batch_size: int, device: torch.device,
) -> dict[str, Any]:
    """Pick the threshold on the validation split, then measure it on the test split."""
    val_probs, val_labels, _ = predict_split(model, ckpt, "val", args, batch_size, device)
    val_conf = val_probs.max(axis=1)
    choice = select_threshold(val_conf, val_probs.argmax(axis=1) == val_labels, target)
    if choice.coverage == 0:
        log(f"  WARNING: no threshold reaches precision {target} on the validation split; the predictor will tag nothing")
    test_precision, test_coverage = precision_coverage(test_probs.max(axis=1), test_probs.argmax(axis=1) == test_labels,
                                                       choice.threshold)

    def num(v: float) -> float | None:
        return None if math.isnan(v) else round(v, DIGITS)

    return {
        "model": name,
        "model_sha256": sha256_file(path),
        "target_precision": target,
        # exact, not rounded: the predictor compares confidences against this very number
        "threshold": choice.threshold,
        "reached": choice.coverage > 0,
        "val_precision": num(choice.precision),
        "val_coverage": num(choice.coverage),
        "num_val": int(len(val_labels)),
        "test_precision": num(test_precision),
        "test_coverage": num(test_coverage),
        "num_test": int(len(test_labels)),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", required=True, help="checkpoints to evaluate; the last one gets the tagging threshold")
    parser.add_argument("--names", nargs="+", required=True, help="one short name per model (used in file names)")
    parser.add_argument("--splits", required=True, help="folder with train/val/test.csv")
    parser.add_argument("--images", required=True, help="image root: <images>/<landmark_id>/<id>.jpg")
    parser.add_argument("--metrics", required=True, help="JSON with the headline test metrics of every model")
    parser.add_argument("--tagging", required=True, help="JSON with the tagging threshold of the last model")
    parser.add_argument("--confusion", required=True, help="folder for DVC confusion records, <name>.json")
    parser.add_argument("--figures", required=True, help="folder for the PNG figures")
    parser.add_argument("--out", required=True, help="folder for per-class and per-image CSVs")
    parser.add_argument("--params", default="params.yaml", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if len(args.models) != len(args.names):
        parser.error(f"{len(args.models)} --models but {len(args.names)} --names; give one name per model")
    bad = [n for n in args.names if not re.fullmatch(r"[A-Za-z0-9_.-]+", n)]
    if bad or len(set(args.names)) != len(args.names):
        parser.error(f"--names must be unique and use only letters, digits, '_', '.', '-': {args.names}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    batch_size = params["evaluate"]["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"evaluate.batch_size={batch_size!r} is not valid; use an integer >= 1")
    target = params["tagging"]["precision"]
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1:
        raise ConfigError(f"tagging.precision={target!r} is not valid; use a number in (0, 1]")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    metrics: dict[str, dict[str, Any]] = {}
    for i, (path, name) in enumerate(zip(args.models, args.names)):
        log(f"evaluating {name} ({path}) on {device}")
        model, ckpt = load_checkpoint(path)
        probs, labels, dataset = predict_split(model, ckpt, "test", args, batch_size, device)
        metrics[name] = {**rounded(summarize(probs, labels)), "num_unreadable": len(dataset.unreadable)}
        write_model_reports(name, probs, labels, dataset, ckpt, args)
        if i == len(args.models) - 1:
            tagging = tagging_record(name, path, model, ckpt, probs, labels, float(target), args, batch_size, device)
            write_json(args.tagging, tagging)
            plot_train_batch(ckpt, args, Path(args.figures) / "train_batch.png")
    write_json(args.metrics, plain_json(metrics))

    cols = ("top1", "top5", "gap", "ece", "macro_f1", "num_test")
    print(f"{'model':<12}" + "".join(f"{c:>10}" for c in cols))
    for name, m in metrics.items():
        print(f"{name:<12}" + "".join(f"{m[c]:>10.4f}" if isinstance(m[c], float) else f"{m[c]:>10}" for c in cols))
    t = tagging
    if t["reached"]:
        print(f"tagging ({t['model']}): threshold {t['threshold']:.4f} for precision >= {t['target_precision']}: "
              f"val precision {t['val_precision']} coverage {t['val_coverage']}; "
              f"test precision {t['test_precision']} coverage {t['test_coverage']}")
    else:
        print(f"tagging ({t['model']}): no threshold reaches precision {t['target_precision']} on the validation "
              "split; the exported predictor will answer 'no landmark' for every photo")


if __name__ == "__main__":
    main()
