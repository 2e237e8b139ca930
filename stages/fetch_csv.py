"""Stage fetch_csv: the dataset's metadata as data/raw/{train.csv, label_to_category.csv, distractors.csv, manifest.json}.

dataset: synthetic -> rendered by landmarks.synthetic (deterministic from `seed`);
         gldv2     -> downloaded from gldv2.metadata_url / gldv2.category_url (http(s) or a
                      file:// mirror), resumable: partial bytes wait in `<out>.partial/` beside
                      the output, which DVC does not delete before rerunning the stage; the
                      distractors are the non-landmark photos of the first
                      gldv2.distractor_shards test shards, in <out>/distractors/<id>.jpg
                      (landmarks.gldv2_distractors);
         folder    -> scanned from --folder, one sub-folder per landmark.
Every download names us with params.yaml's download.user_agent (the one download setting this
stage reads: the image settings do not change the metadata).
distractors.csv (id,url) lists photos that show no landmark of the class list (synthetic scenes,
the folder's `_no_landmark/`); it may be empty.
The manifest records, for each file, its source, size in bytes and sha256.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from landmarks.fetch import fetch_file
from landmarks.files import sha256_file
from landmarks.folder import NO_LANDMARK_FOLDER, scan_folder
from landmarks.gldv2 import CATEGORY_COLUMNS, DISTRACTOR_COLUMNS, TRAIN_COLUMNS
from landmarks.gldv2_distractors import DistractorError, distractor_source, fetch_distractors
from landmarks.http import FetchError
from landmarks.params import Params
from stages.common import ConfigError, log, stage_params, write_json

TRAIN_FILE = "train.csv"
CATEGORY_FILE = "label_to_category.csv"
DISTRACTOR_FILE = "distractors.csv"
SOLUTION_FILE = "recognition_solution.csv"
DISTRACTOR_DIR = "distractors"


def write_csv(df: pd.DataFrame, path: Path, source: str) -> dict[str, Any]:
    """Write `df` and return its manifest entry."""
    df.to_csv(path, index=False)
    return {"source": source, "size": path.stat().st_size, "sha256": sha256_file(path)}


def from_synthetic(params: Params, out: Path) -> dict[str, Any]:
    from landmarks.synthetic import generate_dataset  # only this mode needs it

    settings = asdict(params.synthetic)
    train, categories, distractors = generate_dataset(out / "synthetic", seed=params.seed, **settings)
    source = "synthetic:" + ",".join(f"{k}={v}" for k, v in {"seed": params.seed, **settings}.items())
    return {
        TRAIN_FILE: write_csv(train[list(TRAIN_COLUMNS)], out / TRAIN_FILE, source),
        CATEGORY_FILE: write_csv(categories, out / CATEGORY_FILE, source),
        DISTRACTOR_FILE: write_csv(distractors[list(DISTRACTOR_COLUMNS)], out / DISTRACTOR_FILE, source),
    }


def from_folder(folder: Path, out: Path) -> dict[str, Any]:
    try:
        scan = scan_folder(folder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if scan.train.empty:
        raise ConfigError(f"folder.path={str(folder)!r} has no images; add one sub-folder of photos per landmark")
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


def from_gldv2(params: Params, out: Path) -> dict[str, Any]:
    g = params.gldv2
    source = distractor_source(g.solution_url, g.test_shard_url, g.distractor_shards)
    agent = params.download.user_agent
    partial = out.parent / f"{out.name}.partial"
    files = {}
    for key, url, name, columns in (("metadata_url", g.metadata_url, TRAIN_FILE, TRAIN_COLUMNS),
                                    ("category_url", g.category_url, CATEGORY_FILE, CATEGORY_COLUMNS)):
        log(f"fetch_csv: {url} -> {out / name}")
        try:
            record = fetch_file(url, out / name, partial_dir=partial, user_agent=agent)
        except FetchError as e:
            raise SystemExit(f"error: could not fetch gldv2.{key}={url}: {e}") from None
        header = pd.read_csv(out / name, nrows=0)
        missing = [c for c in columns if c not in header.columns]
        if missing:
            raise SystemExit(f"error: {url} is not a GLDv2 {name}: missing column(s) {', '.join(missing)}")
        files[name] = {"source": record["url"], "size": record["size"], "sha256": record["sha256"]}
    try:
        distractors, records = fetch_distractors(source, out, partial, solution_name=SOLUTION_FILE,
                                                 user_agent=agent, images_name=DISTRACTOR_DIR, log=log)
    except DistractorError as e:
        raise SystemExit(f"error: {e}") from None
    files.update(records)
    shards = ", ".join(source.shard_urls) or "gldv2.distractor_shards=0"
    files[DISTRACTOR_FILE] = write_csv(distractors, out / DISTRACTOR_FILE, shards)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="photos root for dataset: folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args()

    params = stage_params()
    dataset = params.dataset
    args.out.mkdir(parents=True, exist_ok=True)
    if dataset == "synthetic":
        files = from_synthetic(params, args.out)
    elif dataset == "folder":
        files = from_folder(args.folder, args.out)
    else:
        files = from_gldv2(params, args.out)
    write_json(args.out / "manifest.json", {"dataset": dataset, "files": files})
    for name, entry in files.items():
        log(f"fetch_csv: {name}: {entry['size']:,} bytes, sha256 {entry['sha256'][:12]}…")


if __name__ == "__main__":
    main()
