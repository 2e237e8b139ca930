"""Stage download: every selected row becomes a stored image or a row in the failures CSV.

Resumable: the images folder is a `persist: true` output, so a rerun (after a crash, Ctrl-C or
SIGKILL) keeps the images already stored and fetches only the rest. Exit status: non-zero for a
configuration error, or when EVERY selected row failed (nothing usable: almost always no network,
a blocked User-Agent or a wrong URL, and training on nothing would only fail later and less
clearly). Any other mix of failures is reported and the stage succeeds.

Classes left with fewer than split.min_images_per_class images are listed in the report
(`classes_below_min`); the split stage drops them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from landmarks.download import FAILURE_COLUMNS, DownloadConfig, download_images
from landmarks.gldv2 import DATASETS, TRAIN_COLUMNS, url_schemes
from stages.common import ConfigError, check_choice, load_params, log, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selected", type=Path, required=True, help="rows to download: id,url,landmark_id")
    parser.add_argument("--images", type=Path, required=True, help="images folder: <landmark_id>/<id>.jpg")
    parser.add_argument("--failures", type=Path, required=True, help="CSV of rows that failed, with a reason")
    parser.add_argument("--report", type=Path, required=True, help="JSON summary")
    args = parser.parse_args()

    params = load_params()
    dataset = check_choice("dataset", params.get("dataset"), DATASETS)
    section = params.get("download")
    if not isinstance(section, dict):
        raise ConfigError(f"download={section!r} is not valid; params.yaml needs a `download:` section")
    try:
        cfg = DownloadConfig.from_params(section, allowed_schemes=url_schemes(dataset))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    min_images = (params.get("split") or {}).get("min_images_per_class")
    if isinstance(min_images, bool) or not isinstance(min_images, int) or min_images < 0:
        raise ConfigError(f"split.min_images_per_class={min_images!r} is not valid; use an integer >= 0")

    # All text: ids and landmark ids are validated row by row, so one bad row cannot stop the read.
    rows = pd.read_csv(args.selected, dtype=str, keep_default_na=False)
    missing = [c for c in TRAIN_COLUMNS if c not in rows.columns]
    if missing:
        sys.exit(f"error: {args.selected} lacks column(s) {', '.join(missing)}")
    log(f"download: {len(rows):,} selected images -> {args.images} ({cfg.workers} workers)")

    result = download_images(rows, args.images, cfg)

    args.failures.parent.mkdir(parents=True, exist_ok=True)
    result.failures.to_csv(args.failures, index=False, columns=list(FAILURE_COLUMNS))
    below = sorted(lid for lid, n in result.images_per_class.items() if n < min_images)
    report = {
        "selected": result.selected,
        "downloaded": result.downloaded,
        "already_present": result.already_present,
        "failed": len(result.failures),
        "failures_by_reason": result.failures_by_reason,
        "distractors": result.distractors,
        "removed_stale_files": result.removed,
        "min_images_per_class": min_images,
        "num_classes_below_min": len(below),
        "classes_below_min": below,
    }
    write_json(args.report, report)
    log(f"download: {result.downloaded:,} downloaded, {result.already_present:,} already present, "
        f"{len(result.failures):,} failed {report['failures_by_reason']}, {result.removed:,} stale files removed")
    if below:
        log(f"download: {len(below)} classes have fewer than {min_images} images and will be dropped by split")
    if result.selected and result.downloaded + result.already_present == 0:
        sys.exit(f"error: all {result.selected:,} selected images failed ({report['failures_by_reason']}); "
                 f"check the network, download.user_agent and the URLs in {args.selected}")


if __name__ == "__main__":
    main()
