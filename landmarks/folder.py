"""The `folder` dataset: your own photos, one sub-folder per landmark, as GLDv2-style metadata.

photos/<landmark name>/<any name> -> a train.csv row (id, file:// url, landmark_id) and a
label_to_category row (landmark_id, category = the folder name, which select_classes keeps as
the landmark's name). Everything is deterministic: landmark ids follow the sorted folder names
(0..n-1), and an image id is the first 16 hex digits of the sha256 of its path relative to the
root, so it stays the same when the folder moves. Every file is listed, readable or not: the
download stage records the ones that are not images. Hidden files and folders (`.DS_Store`,
`.ipynb_checkpoints`, ...) are OS or tool clutter and are skipped, as are files at the top level,
which belong to no landmark; both are counted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class FolderScan:
    train: pd.DataFrame  # id, url, landmark_id
    categories: pd.DataFrame  # landmark_id, category
    skipped_hidden: int
    skipped_top_level: int


def image_id(relative_path: str) -> str:
    """A stable 16-hex-digit id for an image from its POSIX path relative to the dataset root."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:16]


def scan_folder(root: str | Path) -> FolderScan:
    """List every image file under `root`/<landmark>/ (recursively), with deterministic ids."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"folder.path={str(root)!r} is not a folder; create it with one sub-folder per landmark")
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    landmarks = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    top_level = sum(1 for p in entries if not p.is_dir() and not p.name.startswith("."))
    rows, hidden = [], 0
    for landmark_id, folder in enumerate(landmarks):
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                hidden += not path.is_dir()
                continue
            if path.is_dir():
                continue
            rows.append((image_id(rel.as_posix()), path.absolute().as_uri(), landmark_id))
    train = pd.DataFrame(rows, columns=["id", "url", "landmark_id"])
    categories = pd.DataFrame({"landmark_id": range(len(landmarks)), "category": [p.name for p in landmarks]})
    return FolderScan(train=train, categories=categories, skipped_hidden=hidden, skipped_top_level=top_level)
