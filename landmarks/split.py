"""Stratified, seeded train/val/test split over the images that actually downloaded."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from landmarks.data import SPLITS, image_path
from landmarks.gldv2 import NO_LANDMARK_ID


def check_fractions(fractions: dict[str, float]) -> None:
    """Each fraction in (0, 1) and together 1; otherwise a ValueError."""
    for name, value in fractions.items():
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"the {name} fraction {value!r} must be a number between 0 and 1")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        shown = " + ".join(f"{k}={v}" for k, v in fractions.items())
        raise ValueError(f"split fractions must add up to 1, got {shown} = {total:g}")


def available_rows(selected: pd.DataFrame, images_dir: str | os.PathLike) -> pd.DataFrame:
    """The selected rows whose image is stored (failed downloads are listed elsewhere, with reasons)."""
    exists = [image_path(images_dir, lid, iid).is_file() for lid, iid in zip(selected["landmark_id"], selected["id"])]
    return selected.loc[exists, ["id", "landmark_id"]].reset_index(drop=True)


def stratified_split(
    rows: pd.DataFrame, *, fractions: dict[str, float], seed: int, min_images_per_class: int
) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """Split every class by `fractions` (train/val/test), each shuffled with its own seeded RNG.

    Classes with fewer than `min_images_per_class` images are dropped and returned as
    [{"landmark_id", "images"}], because a class with no validation or test image can be
    neither tuned nor measured. Every kept class gets at least one image in each split.
    Distractors (landmark_id NO_LANDMARK_ID) are not a class: they go to val and test only, in the
    ratio val:test, because they serve to choose and to measure the tagging threshold.
    """
    check_fractions(fractions)
    if min_images_per_class < len(SPLITS):
        raise ValueError(f"min_images_per_class={min_images_per_class} must be >= {len(SPLITS)}")
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    dropped = []
    for landmark_id, group in rows.sort_values(["landmark_id", "id"]).groupby("landmark_id", sort=True):
        n = len(group)
        if landmark_id == NO_LANDMARK_ID:
            order = group.iloc[np.random.default_rng([seed, 0xD157]).permutation(n)]
            n_val = int(round(n * fractions["val"] / (fractions["val"] + fractions["test"])))
            parts["val"].append(order.iloc[:n_val])
            parts["test"].append(order.iloc[n_val:])
            continue
        if n < min_images_per_class:
            dropped.append({"landmark_id": int(landmark_id), "images": n})
            continue
        # A per-class generator: adding or removing one class never reshuffles another.
        rng = np.random.default_rng([seed, int(landmark_id)])
        order = group.iloc[rng.permutation(n)]
        n_val = max(1, int(round(n * fractions["val"])))
        n_test = max(1, int(round(n * fractions["test"])))
        n_train = n - n_val - n_test
        parts["train"].append(order.iloc[:n_train])
        parts["val"].append(order.iloc[n_train : n_train + n_val])
        parts["test"].append(order.iloc[n_train + n_val :])
    empty = rows.iloc[:0][["id", "landmark_id"]]
    splits = {name: (pd.concat(frames) if frames else empty).reset_index(drop=True) for name, frames in parts.items()}
    if splits["train"].empty:  # distractors alone are nothing to learn from
        splits = {name: empty.reset_index(drop=True) for name in SPLITS}
    return splits, dropped


def class_table(classes: pd.DataFrame, splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The kept classes in model output order (by landmark_id), with their image counts per split."""
    kept = sorted(set(splits["train"]["landmark_id"]))
    table = classes.set_index("landmark_id").loc[kept].reset_index()
    for name, frame in splits.items():
        table[f"n_{name}"] = table["landmark_id"].map(frame["landmark_id"].value_counts()).fillna(0).astype(int)
    return table
