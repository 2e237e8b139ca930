"""The Google Landmarks Dataset v2 metadata formats: reading the CSVs and naming landmarks.

train.csv has `id,url,landmark_id` (id: 16 hex digits; url: percent-encoded, http or https);
train_label_to_category.csv has `landmark_id,category` where category is a Wikimedia Commons
category URL; public extensions add columns (wikidata_id, latitude, longitude), which we keep.
The `folder` dataset writes the same two files, with the folder name as the category.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pandas as pd

from landmarks.params import DATASETS

TRAIN_COLUMNS = ("id", "url", "landmark_id")
CATEGORY_COLUMNS = ("landmark_id", "category")
# Distractors: photos that show no landmark of the class list (GLDv2's non-landmark test images,
# synthetic scenes, a folder's `_no_landmark/`). fetch_csv lists them in their own file, and from
# select_classes on they travel in the same tables as the landmarks with this landmark_id.
DISTRACTOR_COLUMNS = ("id", "url")
NO_LANDMARK_ID = -1
NO_LANDMARK_DIR = "no_landmark"

# Lower-case only: ids become file names, and two ids differing only in case would collide on
# case-insensitive file systems (macOS, Windows). GLDv2's ids are all lower-case.
ID_RE = re.compile(r"[0-9a-f]{16}")


def image_path(images_dir: str | os.PathLike, landmark_id: int | str, image_id: str) -> Path:
    """Where the download stage stores an image: <images>/<landmark_id>/<id>.jpg, and a distractor
    (NO_LANDMARK_ID) at <images>/no_landmark/<id>.jpg.

    `image_id` must already be validated (16 hex digits). The landmark id is normalised through
    int, so "0042" and 42 name the same folder whichever stage computes the path.
    """
    lid = int(landmark_id)
    return Path(images_dir) / (NO_LANDMARK_DIR if lid == NO_LANDMARK_ID else str(lid)) / f"{image_id}.jpg"


def is_valid_id(value: object) -> bool:
    """True if `value` is an image id that is safe to use as a file name: 16 lower-case hex digits."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def url_schemes(dataset: str) -> tuple[str, ...]:
    """URL schemes a dataset's rows may use: the real GLDv2 only points at the web, while
    synthetic and folder datasets point at local files (a file:// row in GLDv2 metadata would
    read this machine's disk)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not valid; choose one of: {', '.join(DATASETS)}")
    return ("http", "https") if dataset == "gldv2" else ("http", "https", "file")


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], path: str | Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")


def _landmark_ids_are_integers(path: str | Path) -> bool:
    """Whether every landmark_id parses as int64 (true of the real file; ~0.5 s for 4.1M rows)."""
    try:
        pd.read_csv(path, usecols=["landmark_id"], dtype={"landmark_id": "int64"}, engine="c")
        return True
    except (ValueError, OverflowError):
        return False


def iter_train_csv(path: str | Path, *, chunksize: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """Yield a GLDv2-style train.csv in chunks: id and url as object str, landmark_id as int64.

    Strings are kept exactly as written (no NA conversion, URLs stay percent-encoded). If some
    landmark_id is not an integer, that column is nullable Int64 with <NA> there, so that the
    caller can count and drop those rows instead of the whole read failing. Plain object columns
    because pandas' `str` dtype costs ~3 s more on the 4.1M-row file without pyarrow; chunks let
    the caller reduce each part before the next is parsed.
    """
    header = pd.read_csv(path, nrows=0)
    _check_columns(header, TRAIN_COLUMNS, path)
    strict = _landmark_ids_are_integers(path)
    dtypes = {"id": object, "url": object, "landmark_id": "int64" if strict else object}
    reader = pd.read_csv(path, usecols=list(TRAIN_COLUMNS), dtype=dtypes, na_filter=False,
                         engine="c", chunksize=chunksize)
    with reader:
        for chunk in reader:
            if not strict:
                num = pd.to_numeric(chunk["landmark_id"], errors="coerce")
                chunk["landmark_id"] = num.where(num == num.round()).astype("Int64")  # 3.5 -> <NA>, not 3
            yield chunk[list(TRAIN_COLUMNS)]


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """The whole train.csv as one DataFrame (see iter_train_csv for the column types)."""
    parts = list(iter_train_csv(path))
    if not parts:  # a header-only file yields no chunks
        return pd.DataFrame({"id": [], "url": [], "landmark_id": []}, dtype=object).astype({"landmark_id": "int64"})
    return pd.concat(parts, ignore_index=True)


def read_categories(path: str | Path) -> pd.DataFrame:
    """Read a label-to-category CSV: landmark_id (int64), category (str) and any extra columns as str.

    Extra columns (wikidata_id, latitude, ...) stay strings so they are written back exactly.
    Rows whose landmark_id is not an integer are dropped here; they cannot name any landmark.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False, engine="c")
    _check_columns(df, CATEGORY_COLUMNS, path)
    ids = pd.to_numeric(df["landmark_id"], errors="coerce")
    df = df[ids.notna()].copy()
    df["landmark_id"] = ids[ids.notna()].astype("int64")
    return df.reset_index(drop=True)


def category_name(category: str) -> str:
    """A readable landmark name from a Commons category URL, e.g. `.../Category:Eiffel_Tower` -> "Eiffel Tower".

    The last path segment is percent-decoded (`G%C3%B6ttingen` -> "Göttingen") and `_` becomes a
    space, as in MediaWiki titles. A value that is not a URL (the `folder` dataset stores the
    folder name itself) is returned unchanged, so a folder name round-trips exactly.
    """
    if "://" not in category:
        return category
    title = category.rstrip("/").rsplit("/", 1)[-1]
    title = unquote(title.split("?", 1)[0].split("#", 1)[0])
    if title.startswith("Category:"):
        title = title[len("Category:"):]
    return title.replace("_", " ").strip()
