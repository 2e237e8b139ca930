"""Stage fetch_csv: the dataset's metadata as data/raw/{train.csv, label_to_category.csv, distractors.csv, manifest.json}.

dataset: synthetic (rendered from `seed`), folder (scanned from --folder) or gldv2 (downloaded,
resumably, with the non-landmark photos of gldv2.distractor_shards test shards): landmarks.sources.
Every download names us with params.yaml's download.user_agent (the one download setting this
stage reads: the image settings do not change the metadata). distractors.csv (id,url) lists photos
that show no landmark of the class list; it may be empty. The manifest records, for each file,
its source, size in bytes and sha256.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from landmarks import sources
from stages.common import ConfigError, log, stage_params, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="photos root for dataset: folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args()

    params = stage_params()
    args.out.mkdir(parents=True, exist_ok=True)
    if params.dataset == "synthetic":
        files = sources.from_synthetic(args.out, seed=params.seed, **asdict(params.synthetic))
    elif params.dataset == "folder":
        try:
            files = sources.from_folder(args.folder, args.out, log)
        except ValueError as e:  # no folder, or no photo in it
            raise ConfigError(f"folder.path={str(args.folder)!r} is not valid: {e}") from None
    else:
        g = params.gldv2
        try:
            files = sources.from_gldv2(args.out, metadata_url=g.metadata_url, category_url=g.category_url,
                                       solution_url=g.solution_url, shard_template=g.test_shard_url,
                                       shards=g.distractor_shards, user_agent=params.download.user_agent, log=log)
        except sources.SourceError as e:
            raise SystemExit(f"error: {e}") from None
    write_json(args.out / "manifest.json", {"dataset": params.dataset, "files": files})
    for name, entry in files.items():
        log(f"fetch_csv: {name}: {entry['size']:,} bytes, sha256 {entry['sha256'][:12]}…")


if __name__ == "__main__":
    main()
