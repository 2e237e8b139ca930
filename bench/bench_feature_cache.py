"""Epoch time of frozen-backbone training with and without the feature cache.

Runs the real entry point, `train_classifier`, twice on the same generated JPEGs: pretrained
efficientnet_lite0, freeze "all", 128 px, once with `TrainSpec(cache_features=True)` and once
with False; everything else equal, including augment "none" for both (the cache always sees
un-augmented images, so this isolates the cache itself). Timers wrap the loop functions fit calls,
so what is measured is exactly:
- epoch time: `train_one_epoch` + `evaluate` (the per-epoch validation) of each epoch, median;
- feature pass: the cached run's `extract_features` over train and val, paid once;
- total: the whole `train_classifier` call (model and data set-up, every epoch, checkpoint save).
Target: uncached / cached epoch time >= 10.   Run from the repo root: `python bench/bench_feature_cache.py`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import landmarks.train as train  # noqa: E402
from landmarks.train_spec import TrainSpec  # noqa: E402
from tests.conftest import make_image_tree  # noqa: E402

STORED_SIZE = 320  # params download.image_size: the shorter side of every stored image
NUM_CLASSES = 12


@contextmanager
def timing(names: tuple[str, ...]) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """Record (wall, CPU) seconds of every call to these landmarks.train functions (fit looks them up at call time)."""
    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    originals = {name: getattr(train, name) for name in names}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        return wrapper

    for name, fn in originals.items():
        setattr(train, name, timed(name, fn))
    try:
        yield times
    finally:
        for name, fn in originals.items():
            setattr(train, name, fn)


def make_splits(root: Path, per_class: int, val_per_class: int) -> Path:
    """Generated JPEGs with train/val split CSVs and a class list, as the split stage writes them."""
    paths = make_image_tree(root, num_classes=NUM_CLASSES, per_class=per_class, size=STORED_SIZE)
    rows = pd.read_csv(paths["selected"], dtype={"id": str})
    rank = rows.groupby("landmark_id").cumcount()
    splits = root / "splits"
    splits.mkdir()
    rows[rank >= val_per_class].to_csv(splits / "train.csv", index=False)
    rows[rank < val_per_class].to_csv(splits / "val.csv", index=False)
    shutil.copy(paths["classes"], splits / "classes.csv")
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help=f"generated images per class ({NUM_CLASSES} classes)")
    parser.add_argument("--val-per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    results: dict[bool, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        splits = make_splits(Path(tmp), args.per_class, args.val_per_class)
        n_train, n_val = (len(pd.read_csv(splits / f"{s}.csv")) for s in ("train", "val"))
        print(f"efficientnet_lite0, pretrained, freeze=all, 128 px, augment=none, batch 32, {args.epochs} epochs; "
              f"{n_train} train / {n_val} val generated {STORED_SIZE}px JPEGs; {torch.get_num_threads()} threads", flush=True)
        for cache in (False, True):
            spec = TrainSpec(arch="efficientnet_lite0", pretrained=True, freeze="all", dropout=0.2, image_size=128,
                             crop_fraction=0.875, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), augment="none",
                             epochs=args.epochs, batch_size=32, optimizer="adamw", lr=0.003, backbone_lr=None, momentum=0.9,
                             weight_decay=0.01, scheduler="cosine", warmup_epochs=0.0, step_size=7, gamma=0.1,
                             label_smoothing=0.0, device="auto", num_workers="auto", seed=42, cache_features=cache)
            with timing(("train_one_epoch", "evaluate", "extract_features")) as times:
                wall, cpu = time.perf_counter(), time.process_time()
                train.train_classifier(spec, splits_dir=splits, images_dir=Path(tmp) / "images",
                                       out_path=Path(tmp) / f"cache{cache}.pt")
                total = (time.perf_counter() - wall, time.process_time() - cpu)
            epochs = [(t[0] + v[0], t[1] + v[1]) for t, v in zip(times["train_one_epoch"], times["evaluate"], strict=True)]
            results[cache] = {
                "epoch": statistics.median(e[0] for e in epochs), "epoch_cpu": statistics.median(e[1] for e in epochs),
                "features": sum(f[0] for f in times["extract_features"]), "features_cpu": sum(f[1] for f in times["extract_features"]),
                "total": total[0], "total_cpu": total[1],
            }
            print(f"cache_features={cache}: epoch times (train + val), wall/CPU s: "
                  + " ".join(f"{w:.3f}/{c:.3f}" for w, c in epochs), flush=True)

    plain, cached = results[False], results[True]
    print("Wall clock (what you wait for; on a shared machine it includes other processes' load), CPU time of this process in brackets:")
    print(f"without cache: {plain['epoch']:.3f} s ({plain['epoch_cpu']:.3f}) per epoch (median), "
          f"total {plain['total']:.1f} s ({plain['total_cpu']:.1f}) for {args.epochs} epochs")
    print(f"with cache:    {cached['epoch']:.3f} s ({cached['epoch_cpu']:.3f}) per epoch (median) after a one-off feature pass of "
          f"{cached['features']:.1f} s ({cached['features_cpu']:.1f}), total {cached['total']:.1f} s ({cached['total_cpu']:.1f}) "
          f"for {args.epochs} epochs")
    ratio, ratio_cpu = plain["epoch"] / cached["epoch"], plain["epoch_cpu"] / cached["epoch_cpu"]
    print(f"total speed-up over {args.epochs} epochs, feature pass included: {plain['total'] / cached['total']:.1f}x "
          f"({plain['total_cpu'] / cached['total_cpu']:.1f}x CPU)")
    print(f"per-epoch speed-up: {ratio:.0f}x wall, {ratio_cpu:.0f}x CPU  (target >= 10: {'met' if min(ratio, ratio_cpu) >= 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
