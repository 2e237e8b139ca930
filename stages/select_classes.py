"""Stage select_classes: clean the metadata rows, keep the landmarks to learn, sample their images."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from landmarks.gldv2 import iter_train_csv, read_categories, url_schemes
from landmarks.select import select_classes, select_distractors
from stages.common import log, stage_params, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="fetch_csv's output folder")
    parser.add_argument("--out-selected", type=Path, required=True, help="selected rows: id,url,landmark_id")
    parser.add_argument("--out-classes", type=Path, required=True, help="one row per selected landmark")
    parser.add_argument("--report", type=Path, help="optional JSON with the row counts and drop reasons")
    args = parser.parse_args()

    params = stage_params()
    dataset, seed, g = params.dataset, params.seed, params.gldv2
    if dataset == "gldv2":
        min_images, max_images, max_classes, max_distractors = (
            g.min_images_per_class, g.max_images_per_class, g.max_classes, g.max_distractors)
    else:  # synthetic and folder datasets are already the classes (and distractors) the user wants
        min_images, max_images, max_classes, max_distractors = 0, None, None, None

    train = iter_train_csv(args.raw / "train.csv")
    categories = read_categories(args.raw / "label_to_category.csv")
    sel = select_classes(
        train, categories, min_images_per_class=min_images, max_images_per_class=max_images,
        max_classes=max_classes, seed=seed, allowed_schemes=url_schemes(dataset),
    )
    log(f"select_classes: read {sel.stats['rows_read']:,} rows, {len(categories):,} categories ({dataset})")
    for reason, count in sel.dropped.items():
        if count:
            log(f"select_classes: dropped {count:,} rows: {reason}")
    s = sel.stats
    log(f"select_classes: {s['rows_valid']:,} valid rows in {s['landmarks_available']:,} landmarks; "
        f"{s['landmarks_eligible']:,} have more than {min_images} images; kept {s['classes_selected']:,} "
        f"classes, {s['rows_selected']:,} rows")
    if s["classes_without_category"]:
        log(f"select_classes: {s['classes_without_category']} classes have no category; named 'landmark <id>'")

    distractors, distractors_dropped = select_distractors(
        pd.read_csv(args.raw / "distractors.csv", dtype=str, keep_default_na=False),
        landmark_ids=sel.selected["id"], max_distractors=max_distractors, seed=seed)
    log(f"select_classes: {len(distractors):,} distractor photos (no landmark)"
        + "".join(f"; dropped {n:,}: {reason}" for reason, n in distractors_dropped.items() if n))

    args.out_selected.parent.mkdir(parents=True, exist_ok=True)
    args.out_classes.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([sel.selected, distractors], ignore_index=True).to_csv(args.out_selected, index=False)
    sel.classes.to_csv(args.out_classes, index=False)
    if args.report:
        write_json(args.report, {**s, "distractors_selected": len(distractors), "dropped": sel.dropped,
                                 "distractors_dropped": distractors_dropped})


if __name__ == "__main__":
    main()
