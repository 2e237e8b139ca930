"""Where each dataset's metadata comes from: data/raw/{train.csv, label_to_category.csv, distractors.csv}.

synthetic: rendered by landmarks.synthetic, deterministic from the seed;
folder:    scanned from a folder of photos, one sub-folder per landmark (landmarks.folder);
gldv2:     the official metadata downloaded resumably (partial bytes wait in `<out>.partial/`,
           which DVC keeps when it reruns the stage), and the non-landmark photos of the first
           test shards as distractors (landmarks.gldv2_distractors).
Each function returns the manifest entries (source, size, sha256) of the files it wrote.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from landmarks.fetch import fetch_file
from landmarks.files import sha256_file
from landmarks.folder import NO_LANDMARK_FOLDER, scan_folder
from landmarks.gldv2 import CATEGORY_COLUMNS, DISTRACTOR_COLUMNS, TRAIN_COLUMNS
from landmarks.gldv2_distractors import DistractorError, distractor_source, fetch_distractors
from landmarks.http import FetchError

TRAIN_FILE = "train.csv"
CATEGORY_FILE = "label_to_category.csv"
DISTRACTOR_FILE = "distractors.csv"
SOLUTION_FILE = "recognition_solution.csv"
DISTRACTOR_DIR = "distractors"
Log = Callable[[str], None]


class SourceError(Exception):
    """The source cannot give the dataset (a failed download, a file that is not what it should be): one line."""


def write_csv(df: pd.DataFrame, path: Path, source: str) -> dict[str, Any]:
    """Write `df` and return its manifest entry."""
    df.to_csv(path, index=False)
    return {"source": source, "size": path.stat().st_size, "sha256": sha256_file(path)}


def from_synthetic(out: Path, *, seed: int, **settings: Any) -> dict[str, Any]:
    """Render the synthetic landmarks (`settings`: landmarks.synthetic.generate_dataset's keywords)."""
    from landmarks.synthetic import generate_dataset  # only this source needs it

    train, categories, distractors = generate_dataset(out / "synthetic", seed=seed, **settings)
    source = "synthetic:" + ",".join(f"{k}={v}" for k, v in {"seed": seed, **settings}.items())
    return {
        TRAIN_FILE: write_csv(train[list(TRAIN_COLUMNS)], out / TRAIN_FILE, source),
        CATEGORY_FILE: write_csv(categories, out / CATEGORY_FILE, source),
        DISTRACTOR_FILE: write_csv(distractors[list(DISTRACTOR_COLUMNS)], out / DISTRACTOR_FILE, source),
    }


def from_folder(folder: Path, out: Path, log: Log) -> dict[str, Any]:
    """Index a folder of photos; ValueError if it is no folder or holds no landmark photo."""
    scan = scan_folder(folder)
    if scan.train.empty:
        raise ValueError("it has no images; add one sub-folder of photos per landmark")
    log(f"fetch_csv: {len(scan.train):,} files in {len(scan.categories)} landmark folders under {folder}"
        + (f"; skipped {scan.skipped_hidden} hidden" if scan.skipped_hidden else "")
        + (f"; ignored {scan.skipped_top_level} files outside landmark folders" if scan.skipped_top_level else "")
        + f"; {len(scan.distractors):,} distractor files in {NO_LANDMARK_FOLDER}/")
    source = folder.absolute().as_uri()
    return {
        TRAIN_FILE: write_csv(scan.train, out / TRAIN_FILE, source),
        CATEGORY_FILE: write_csv(scan.categories, out / CATEGORY_FILE, source),
        DISTRACTOR_FILE: write_csv(scan.distractors, out / DISTRACTOR_FILE, source),
    }


def from_gldv2(out: Path, *, metadata_url: str, category_url: str, solution_url: str, shard_template: str,
               shards: int, user_agent: str, log: Log) -> dict[str, Any]:
    """Download GLDv2's metadata and its first `shards` test shards' non-landmark photos."""
    partial = out.parent / f"{out.name}.partial"
    files = {}
    for url, name, columns in ((metadata_url, TRAIN_FILE, TRAIN_COLUMNS), (category_url, CATEGORY_FILE, CATEGORY_COLUMNS)):
        log(f"fetch_csv: {url} -> {out / name}")
        try:
            record = fetch_file(url, out / name, partial_dir=partial, user_agent=user_agent)
        except FetchError as e:
            raise SourceError(f"could not fetch {url}: {e}") from None
        missing = [c for c in columns if c not in pd.read_csv(out / name, nrows=0).columns]
        if missing:
            raise SourceError(f"{url} is not a GLDv2 {name}: missing column(s) {', '.join(missing)}")
        files[name] = {"source": record["url"], "size": record["size"], "sha256": record["sha256"]}
    source = distractor_source(solution_url, shard_template, shards)
    try:
        distractors, records = fetch_distractors(source, out, partial, solution_name=SOLUTION_FILE,
                                                 user_agent=user_agent, images_name=DISTRACTOR_DIR, log=log)
    except DistractorError as e:
        raise SourceError(str(e)) from None
    files.update(records)
    files[DISTRACTOR_FILE] = write_csv(distractors, out / DISTRACTOR_FILE, ", ".join(source.shard_urls) or "no shards")
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return files
