"""Datasets over the split CSVs and the downloaded image tree."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch.utils.data import Dataset

from landmarks.gldv2 import NO_LANDMARK_ID, image_path
from landmarks.imageio import decode_image

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.csv"


def read_split(splits_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """One split as a DataFrame with at least id and landmark_id."""
    if name not in SPLITS:
        raise ValueError(f"split={name!r} is not valid; choose one of: {', '.join(SPLITS)}")
    return pd.read_csv(Path(splits_dir) / f"{name}.csv", dtype={"id": str, "landmark_id": "int64"})


def read_classes(splits_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The class list in model output order: dicts with landmark_id, name and any category columns."""
    frame = pd.read_csv(Path(splits_dir) / CLASSES_FILE, dtype={"landmark_id": "int64"}, keep_default_na=False)
    records = frame.to_dict("records")
    return [{**r, "landmark_id": int(r["landmark_id"])} for r in records]


def known_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a split that show a landmark of the class list (no distractors)."""
    return frame[frame["landmark_id"] != NO_LANDMARK_ID].reset_index(drop=True)


class LandmarkDataset(Dataset):
    """(image tensor, class index) pairs for the rows of one split; distractors get index -1."""

    def __init__(
        self,
        frame: pd.DataFrame,
        images_dir: str | os.PathLike,
        class_ids: list[int],
        transform: Callable[[Any], torch.Tensor],
    ) -> None:
        index = {lid: i for i, lid in enumerate(class_ids)} | {NO_LANDMARK_ID: -1}
        unknown = set(frame["landmark_id"]) - set(index)
        if unknown:
            raise ValueError(f"{len(unknown)} landmark ids in the split are not in the class list, e.g. {sorted(unknown)[:5]}")
        self.paths = [image_path(images_dir, lid, iid) for lid, iid in zip(frame["landmark_id"], frame["id"])]
        self.labels = [index[lid] for lid in frame["landmark_id"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(decode_image(self.paths[i])), self.labels[i]
