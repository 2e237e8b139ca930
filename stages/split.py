"""Stage split: stratified, seeded train/val/test split of the images that downloaded."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from landmarks.gldv2 import NO_LANDMARK_ID
from landmarks.split import available_rows, class_table, stratified_split
from stages.common import log, stage_params, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--selected", required=True)
    parser.add_argument("--classes", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True, help="folder for train/val/test.csv and classes.csv")
    parser.add_argument("--report", required=True)
    args = parser.parse_args(argv)
    params = stage_params()
    p = params.split

    selected = pd.read_csv(args.selected, dtype={"id": str, "landmark_id": "int64"})
    classes = pd.read_csv(args.classes, dtype={"landmark_id": "int64"}, keep_default_na=False)
    rows = available_rows(selected, args.images)
    splits, dropped = stratified_split(rows, fractions=p.fractions, seed=params.seed,
                                       min_images_per_class=p.min_images_per_class)
    if splits["train"].empty:
        raise SystemExit(f"error: no class has {p.min_images_per_class} or more downloaded images; nothing to train on")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    table = class_table(classes, splits)
    table.to_csv(out / "classes.csv", index=False)
    report = {
        "images_selected": len(selected), "images_available": len(rows),
        "classes": len(table), "classes_dropped": len(dropped),
        **{f"images_{name}": len(frame) for name, frame in splits.items()},
        **{f"distractors_{name}": int((frame["landmark_id"] == NO_LANDMARK_ID).sum()) for name, frame in splits.items()},
        "dropped": dropped,
    }
    write_json(args.report, report)
    for d in dropped:
        log(f"dropped landmark {d['landmark_id']}: only {d['images']} images (split.min_images_per_class={p.min_images_per_class})")
    log(f"split: {len(table)} classes, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
