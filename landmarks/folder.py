"""The `folder` dataset: your own photos, one sub-folder per landmark, as GLDv2-style metadata.

photos/<landmark name>/<any name> -> a train.csv row (id, file:// url, landmark_id) and a
label_to_category row (landmark_id, category = the folder name, which select_classes keeps as
the landmark's name). Everything is deterministic: landmark ids follow the sorted folder names
(0..n-1), and an image id is the first 16 hex digits of the sha256 of its path relative to the
root, so it stays the same when the folder moves. Every file is listed, readable or not: the
download stage records the ones that are not images. Hidden files and folders (`.DS_Store`,
`.ipynb_checkpoints`, ...) are OS or tool clutter and are skipped, as are files at the top level,
which belong to no landmark; both are counted.

The reserved folder `_no_landmark/` holds distractors: photos that show none of the landmarks
(street scenes, food, people, other places). They are never a class; the pipeline puts them into
the validation and test splits so the tagging threshold is chosen on the photos a platform sees.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

NO_LANDMARK_FOLDER = "_no_landmark"


@dataclass
class FolderScan:
    train: pd.DataFrame  # id, url, landmark_id
    categories: pd.DataFrame  # landmark_id, category
    distractors: pd.DataFrame  # id, url: the files under _no_landmark/
    skipped_hidden: int
    skipped_top_level: int


def image_id(relative_path: str) -> str:
    """A stable 16-hex-digit id for an image from its POSIX path relative to the dataset root."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:16]


def scan_folder(root: str | Path) -> FolderScan:
    """List every image file under `root`/<landmark>/ (recursively), with deterministic ids;
    the files under `root`/_no_landmark/ become distractors."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError("it is not a folder; create it with one sub-folder of photos per landmark")
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    folders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    landmarks = [p for p in folders if p.name != NO_LANDMARK_FOLDER]
    top_level = sum(1 for p in entries if not p.is_dir() and not p.name.startswith("."))
    rows, distractors, hidden = [], [], 0
    for folder in folders:
        is_distractor = folder.name == NO_LANDMARK_FOLDER
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                hidden += not path.is_dir()
                continue
            if path.is_dir():
                continue
            row = (image_id(rel.as_posix()), path.absolute().as_uri())
            if is_distractor:
                distractors.append(row)
            else:
                rows.append((*row, landmarks.index(folder)))
    return FolderScan(
        train=pd.DataFrame(rows, columns=["id", "url", "landmark_id"]),
        categories=pd.DataFrame({"landmark_id": range(len(landmarks)), "category": [p.name for p in landmarks]}),
        distractors=pd.DataFrame(distractors, columns=["id", "url"]),
        skipped_hidden=hidden, skipped_top_level=top_level,
    )
