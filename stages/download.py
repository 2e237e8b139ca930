"""Stage download: every selected row becomes a stored image or a row in the failures CSV.

Resumable: the images folder is a `persist: true` output, so a rerun (after a crash, Ctrl-C or
SIGKILL) keeps the images already stored and fetches only the rest. Exit status: non-zero for a
configuration error, or when EVERY selected row failed (nothing usable: almost always no network,
a blocked User-Agent or a wrong URL, and training on nothing would only fail later and less
clearly). Any other mix of failures is reported and the stage succeeds.

The report gives the usable images per class (fewest, median, most) and the classes left with
none; the split stage drops classes with too few (split.min_images_per_class, reported in split.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from landmarks.download import FAILURE_COLUMNS, download_images
from landmarks.gldv2 import TRAIN_COLUMNS, url_schemes
from landmarks.workers import resolve_processes
from stages.common import log, stage_params, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selected", type=Path, required=True, help="rows to download: id,url,landmark_id")
    parser.add_argument("--images", type=Path, required=True, help="images folder: <landmark_id>/<id>.jpg")
    parser.add_argument("--failures", type=Path, required=True, help="CSV of rows that failed, with a reason")
    parser.add_argument("--report", type=Path, required=True, help="JSON summary")
    args = parser.parse_args()

    params = stage_params()
    cfg = params.download

    # All text: ids and landmark ids are validated row by row, so one bad row cannot stop the read.
    rows = pd.read_csv(args.selected, dtype=str, keep_default_na=False)
    missing = [c for c in TRAIN_COLUMNS if c not in rows.columns]
    if missing:
        sys.exit(f"error: {args.selected} lacks column(s) {', '.join(missing)}")
    log(f"download: {len(rows):,} selected images -> {args.images} "
        f"({cfg.workers} workers in {resolve_processes(cfg.processes, cfg.workers)} processes)")

    result = download_images(rows, args.images, cfg, allowed_schemes=url_schemes(params.dataset))

    args.failures.parent.mkdir(parents=True, exist_ok=True)
    result.failures.to_csv(args.failures, index=False, columns=list(FAILURE_COLUMNS))
    counts = pd.Series(result.images_per_class, dtype="int64")
    report = {
        "selected": result.selected,
        "downloaded": result.downloaded,
        "already_present": result.already_present,
        "failed": len(result.failures),
        "failures_by_reason": result.failures_by_reason,
        "distractors": result.distractors,
        "removed_stale_files": result.removed,
        "images_per_class": {"min": int(counts.min()), "median": float(counts.median()), "max": int(counts.max())}
        if len(counts) else None,
        "classes_without_images": sorted(int(k) for k, n in result.images_per_class.items() if n == 0),
    }
    write_json(args.report, report)
    log(f"download: {result.downloaded:,} downloaded, {result.already_present:,} already present, "
        f"{len(result.failures):,} failed {report['failures_by_reason']}, {result.removed:,} stale files removed")
    if report["classes_without_images"]:
        log(f"download: {len(report['classes_without_images'])} classes have no usable image; split drops them")
    if result.selected and result.downloaded + result.already_present == 0:
        sys.exit(f"error: all {result.selected:,} selected images failed ({report['failures_by_reason']}); "
                 f"check the network, download.user_agent and the URLs in {args.selected}")


if __name__ == "__main__":
    main()
