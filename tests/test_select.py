"""Choosing landmarks and images: row cleaning, the class rules, deterministic sampling, distractors, the stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landmarks.gldv2 import NO_LANDMARK_ID
from landmarks.select import parse_hex_ids, select_classes, select_distractors
from stages.common import ConfigError
from tests.test_gldv2 import run_stage_main

WEB = ("http", "https")


def hex_id(n: int) -> str:
    return f"{n * 2654435761 % 2**64:016x}"  # spread out, so sorting by id is not sorting by n


def train_rows(sizes: dict[int, int], start: int = 0) -> pd.DataFrame:
    """`sizes[landmark]` rows per landmark, with distinct ids and https URLs."""
    rows, n = [], start
    for landmark, count in sizes.items():
        for _ in range(count):
            rows.append((hex_id(n), f"https://upload.wikimedia.org/x/{n}.jpg", landmark))
            n += 1
    return pd.DataFrame(rows, columns=["id", "url", "landmark_id"])


def categories(*ids: int) -> pd.DataFrame:
    return pd.DataFrame({"landmark_id": list(ids),
                         "category": [f"http://commons.wikimedia.org/wiki/Category:Place_{i}" for i in ids]})


def select(train: pd.DataFrame, cats: pd.DataFrame | None = None, **kw):
    args = dict(min_images_per_class=0, max_images_per_class=None, max_classes=None, seed=0, allowed_schemes=WEB)
    return select_classes(train, categories() if cats is None else cats, **{**args, **kw})


def test_keeps_only_landmarks_with_more_than_min_images():
    sel = select(train_rows({1: 5, 2: 6, 3: 7}), min_images_per_class=5)
    assert sel.classes["landmark_id"].tolist() == [2, 3]  # exactly 5 is not more than 5
    assert sel.classes["num_available"].tolist() == [6, 7]
    assert sel.stats["landmarks_available"] == 3 and sel.stats["landmarks_eligible"] == 2


def test_samples_at_most_max_per_class_deterministically_from_the_seed():
    train = train_rows({1: 50, 2: 8})
    a = select(train, max_images_per_class=10, seed=1)
    b = select(train.sample(frac=1, random_state=3), max_images_per_class=10, seed=1)  # another row order
    c = select(train, max_images_per_class=10, seed=2)
    assert a.classes["num_selected"].tolist() == [10, 8] and a.classes["num_available"].tolist() == [50, 8]
    assert a.selected.equals(b.selected)  # the sample does not depend on row order
    assert set(a.selected["id"]) != set(c.selected["id"])  # but does depend on the seed
    assert set(a.selected["id"]) <= set(train["id"])
    assert a.selected.columns.tolist() == ["id", "url", "landmark_id"]
    ordered = a.selected.sort_values(["landmark_id", "id"]).reset_index(drop=True)
    assert a.selected.equals(ordered)


def test_sample_spreads_over_the_class():
    train = train_rows({1: 1000})
    picked = set(select(train, max_images_per_class=100, seed=7).selected["id"])
    positions = np.flatnonzero(train["id"].isin(picked))
    assert len(positions) == 100 and positions.min() < 200 and positions.max() > 800  # not the first 100 rows


def test_max_classes_keeps_the_biggest_classes_ties_by_id():
    train = train_rows({5: 3, 9: 9, 7: 4, 2: 4, 1: 2})
    assert select(train, max_classes=2).classes["landmark_id"].tolist() == [2, 9]  # 7 ties with 2 and loses
    assert select(train, max_classes=3).classes["landmark_id"].tolist() == [2, 7, 9]
    assert select(train, max_classes=3, min_images_per_class=3).classes["landmark_id"].tolist() == [2, 7, 9]
    assert select(train, max_classes=9, min_images_per_class=3).classes["landmark_id"].tolist() == [2, 7, 9]


def test_invalid_rows_are_dropped_and_counted():
    good = train_rows({1: 3})
    bad = pd.DataFrame([
        ("NOTHEX0000000000", "https://x/a.jpg", 1),     # invalid_id
        ("ABCDEF0123456789", "https://x/b.jpg", 1),     # invalid_id (upper case)
        ("00000000000000a1", "https://x/c.jpg", -3),    # invalid_landmark_id
        ("00000000000000a2", "https://x/d.jpg", None),  # invalid_landmark_id
        ("00000000000000a3", "", 1),                    # invalid_url
        ("00000000000000a4", "file:///etc/passwd", 1),  # disallowed_scheme
        ("00000000000000a5", "ftp://x/e.jpg", 1),       # disallowed_scheme
        ("00000000000000a6", "HTTPS://x/f.jpg", 1),     # fine: schemes are case-insensitive
        (good["id"][0], "https://x/again.jpg", 1),      # duplicate_id (same landmark): first kept
        ("00000000000000b1", "https://x/g.jpg", 1),     # conflicting_duplicate_id ...
        ("00000000000000b1", "https://x/h.jpg", 2),     # ... both rows dropped
    ], columns=["id", "url", "landmark_id"])
    sel = select(pd.concat([good, bad], ignore_index=True))
    assert sel.dropped == {"invalid_id": 2, "invalid_landmark_id": 2, "invalid_url": 1, "disallowed_scheme": 2,
                           "duplicate_id": 1, "conflicting_duplicate_id": 2}
    assert sorted(sel.selected["id"]) == sorted([*good["id"], "00000000000000a6"])
    assert sel.selected.set_index("id").loc[good["id"][0], "url"] == good["url"][0]  # the first row won
    assert sel.stats["rows_read"] == 14 and sel.stats["rows_dropped"] == 10


def test_file_urls_are_allowed_only_when_asked():
    train = pd.DataFrame([(hex_id(1), "file:///photos/a.jpg", 0)], columns=["id", "url", "landmark_id"])
    assert select(train).dropped["disallowed_scheme"] == 1
    assert len(select(train, allowed_schemes=("http", "https", "file")).selected) == 1


def test_class_table_names_and_extra_category_columns():
    cats = pd.DataFrame({
        "landmark_id": [1, 2, 2],
        "category": ["http://commons.wikimedia.org/wiki/Category:Sparkassen-Arena,_G%C3%B6ttingen",
                     "http://commons.wikimedia.org/wiki/Category:Eiffel_Tower", "http://other"],
        "wikidata_id": ["Q19309291", "Q243", "Q0"],
        "latitude": ["51.542186", "48.8584", "0"],
    })
    sel = select(train_rows({1: 2, 2: 3, 3: 1}), cats)
    assert sel.classes.columns.tolist() == ["landmark_id", "name", "category", "wikidata_id", "latitude",
                                            "num_available", "num_selected"]
    assert sel.classes["name"].tolist() == ["Sparkassen-Arena, Göttingen", "Eiffel Tower", "landmark 3"]
    assert sel.classes["wikidata_id"].tolist() == ["Q19309291", "Q243", ""]  # first entry per landmark wins
    assert sel.stats["classes_without_category"] == 1


def test_parse_hex_ids_handles_odd_values():
    values, valid = parse_hex_ids(np.array(["00000000000000ff", "ffffffffffffffff", "0000000000000g00", "é" * 16,
                                            None, "0" * 15], dtype=object))
    assert valid.tolist() == [True, True, False, False, False, False]
    assert values[:2].tolist() == [255, 2**64 - 1]


def test_empty_input_selects_nothing():
    sel = select(train_rows({}))
    assert sel.selected.empty and sel.classes.empty and sel.selected.columns.tolist() == ["id", "url", "landmark_id"]


@pytest.mark.parametrize("kw,match", [
    ({"min_images_per_class": -1}, "min_images_per_class=-1"),
    ({"max_images_per_class": 0}, "max_images_per_class=0"),
    ({"max_classes": 0}, "max_classes=0"),
])
def test_invalid_arguments_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        select(train_rows({1: 1}), **kw)


# ---------------------------------------------------------------------------------------------
# Distractors


def distractor_rows(n: int, start: int = 10_000, scheme: str = "file") -> pd.DataFrame:
    """`n` distractors (id,url) with distinct ids, as fetch_csv lists them."""
    return pd.DataFrame({"id": [hex_id(i) for i in range(start, start + n)],
                         "url": [f"{scheme}:///data/raw/distractors/{i}.jpg" for i in range(start, start + n)]})


def distract(rows: pd.DataFrame, landmark_ids=(), max_distractors=None, seed=0):
    return select_distractors(rows, landmark_ids=landmark_ids, max_distractors=max_distractors, seed=seed)


def test_distractors_are_cleaned_and_each_drop_counted() -> None:
    good = distractor_rows(3)
    photo = hex_id(5)  # also a landmark photo
    bad = pd.DataFrame([
        ("NOTHEX0000000000", "file:///a.jpg"),            # invalid_id
        ("ABCDEF0123456789", "file:///b.jpg"),            # invalid_id (upper case)
        ("00000000000000a1", ""),                         # invalid_url
        ("00000000000000a2", "ftp://x/c.jpg"),            # disallowed_scheme
        ("00000000000000a3", "https://x/d.jpg"),          # fine: the web
        ("00000000000000a4", "HTTP://x/e.jpg"),           # fine: schemes are case-insensitive
        (good["id"][0], "file:///again.jpg"),             # duplicate_id: the first is kept
        (photo, "file:///f.jpg"),                         # also_a_landmark
    ], columns=["id", "url"])
    rows, dropped = distract(pd.concat([good, bad], ignore_index=True), landmark_ids=[photo, hex_id(6)])
    assert dropped == {"invalid_id": 2, "invalid_url": 1, "disallowed_scheme": 1, "duplicate_id": 1,
                       "also_a_landmark": 1}
    assert rows.columns.tolist() == ["id", "url", "landmark_id"]
    assert sorted(rows["id"]) == sorted([*good["id"], "00000000000000a3", "00000000000000a4"])
    assert (rows["landmark_id"] == NO_LANDMARK_ID).all() and NO_LANDMARK_ID == -1
    assert rows.set_index("id").loc[good["id"][0], "url"] == good["url"][0]  # the first row won
    assert rows["id"].tolist() == sorted(rows["id"])  # sorted by id


def test_a_valid_distractor_is_not_the_duplicate_of_a_dropped_row() -> None:
    """Rows dropped as invalid should not make later valid rows duplicates (as in select_classes)."""
    # "NOTHEX..." parses to the value 0, like the valid id 0000000000000000
    rows, dropped = distract(pd.DataFrame({"id": ["NOTHEX0000000000", "0000000000000000"],
                                           "url": ["file:///a.jpg", "file:///b.jpg"]}))
    assert rows["id"].tolist() == ["0000000000000000"]
    assert dropped["invalid_id"] == 1 and dropped["duplicate_id"] == 0
    # an id whose first row has no usable url, and whose second row has one
    rows, dropped = distract(pd.DataFrame({"id": ["00000000000000aa", "00000000000000aa"],
                                           "url": ["ftp://x/a.jpg", "file:///b.jpg"]}))
    assert rows["url"].tolist() == ["file:///b.jpg"]
    assert dropped["disallowed_scheme"] == 1 and dropped["duplicate_id"] == 0


def test_distractors_are_sampled_at_most_max_deterministically_by_seed() -> None:
    pool = distractor_rows(200)
    a, _ = distract(pool, max_distractors=50, seed=1)
    b, _ = distract(pool.sample(frac=1, random_state=3), max_distractors=50, seed=1)  # another row order
    c, _ = distract(pool, max_distractors=50, seed=2)
    assert len(a) == 50 and a.equals(b)
    assert set(a["id"]) <= set(pool["id"]) and set(a["id"]) != set(c["id"])
    positions = np.flatnonzero(pool["id"].isin(a["id"]))
    assert positions.min() < 40 and positions.max() > 160  # spread over the list, not its first rows
    # the sample does not depend on unrelated rows: adding rows keeps or replaces, never reshuffles
    d, _ = distract(pd.concat([pool, distractor_rows(10, start=500)]), max_distractors=50, seed=1)
    assert len(set(a["id"]) - set(d["id"])) <= 10
    assert len(distract(pool, max_distractors=None)[0]) == 200
    assert len(distract(pool, max_distractors=500)[0]) == 200
    assert distract(pool, max_distractors=0)[0].empty
    with pytest.raises(ValueError, match="max_distractors=-1"):
        distract(pool, max_distractors=-1)


def test_no_distractors_is_an_empty_list_with_the_columns() -> None:
    rows, dropped = distract(pd.DataFrame({"id": pd.Series([], dtype=str), "url": pd.Series([], dtype=str)}))
    assert rows.empty and rows.columns.tolist() == ["id", "url", "landmark_id"]
    assert sum(dropped.values()) == 0


# ---------------------------------------------------------------------------------------------
# The stage


def run_stage(tmp_path: Path, monkeypatch, train: pd.DataFrame, cats: pd.DataFrame,
              distractors: pd.DataFrame | None = None, **params) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    train.to_csv(raw / "train.csv", index=False)
    cats.to_csv(raw / "label_to_category.csv", index=False)
    (distractor_rows(0) if distractors is None else distractors).to_csv(raw / "distractors.csv", index=False)
    run_stage_main("select_classes", ["--raw", "raw", "--out-selected", "selected.csv", "--out-classes", "classes.csv",
                                      "--report", "report.json"], tmp_path, monkeypatch, params)
    return tmp_path


def test_stage_gldv2_applies_the_rules_and_reports_drops(tmp_path, monkeypatch):
    train = pd.concat([train_rows({1: 5, 2: 9, 3: 12}),
                       pd.DataFrame([("bad", "https://x", 3), (hex_id(99), "file:///a.jpg", 3)],
                                    columns=["id", "url", "landmark_id"])], ignore_index=True)
    out = run_stage(tmp_path, monkeypatch, train, categories(1, 2, 3), dataset="gldv2",
                    gldv2={"min_images_per_class": 5, "max_images_per_class": 8, "max_classes": None})
    selected = pd.read_csv(out / "selected.csv", dtype={"id": str})
    classes = pd.read_csv(out / "classes.csv")
    assert classes[["landmark_id", "name", "num_available", "num_selected"]].values.tolist() == [
        [2, "Place 2", 9, 8], [3, "Place 3", 12, 8]]
    assert len(selected) == 16 and selected["id"].str.fullmatch(r"[0-9a-f]{16}").all()
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"]["invalid_id"] == 1 and report["dropped"]["disallowed_scheme"] == 1
    assert report["distractors_selected"] == 0


def test_stage_gldv2_appends_sampled_distractors_with_landmark_id_minus_one(tmp_path, monkeypatch):
    train = train_rows({2: 9, 3: 12})
    distractors = pd.concat([distractor_rows(30),
                             pd.DataFrame([("bad", "file:///x.jpg"), (train["id"][1], "file:///y.jpg")],
                                          columns=["id", "url"])], ignore_index=True)
    out = run_stage(tmp_path, monkeypatch, train, categories(2, 3), distractors, dataset="gldv2",
                    gldv2={"min_images_per_class": 5, "max_images_per_class": 20, "max_classes": None,
                           "max_distractors": 10})
    selected = pd.read_csv(out / "selected.csv", dtype={"id": str})
    assert selected.columns.tolist() == ["id", "url", "landmark_id"]
    classes = pd.read_csv(out / "classes.csv")
    assert classes["landmark_id"].tolist() == [2, 3]  # a distractor is not a class
    landmarks, extra = selected[selected["landmark_id"] >= 0], selected[selected["landmark_id"] < 0]
    assert len(landmarks) == 21 and len(extra) == 10 and (extra["landmark_id"] == -1).all()
    assert selected.index[selected["landmark_id"] < 0].min() == 21  # appended after the landmark rows
    assert set(extra["id"]) <= set(distractors["id"][:30]) and extra["url"].str.startswith("file:///").all()
    expected, _ = select_distractors(distractors, landmark_ids=landmarks["id"], max_distractors=10, seed=42)
    assert extra["id"].tolist() == expected["id"].tolist()  # sampled with params.yaml's seed
    report = json.loads((out / "report.json").read_text())
    assert report["distractors_selected"] == 10
    assert report["distractors_dropped"] == {"invalid_id": 1, "invalid_url": 0, "disallowed_scheme": 0,
                                             "duplicate_id": 0, "also_a_landmark": 1}
    assert report["rows_selected"] == 21  # the landmark rows alone


def test_stage_keeps_everything_for_local_datasets(tmp_path, monkeypatch):
    train = train_rows({0: 2, 1: 1})
    train.loc[0, "url"] = "file:///photos/a.jpg"
    out = run_stage(tmp_path, monkeypatch, train, categories(0, 1), distractor_rows(5), dataset="folder",
                    gldv2={"min_images_per_class": 600, "max_images_per_class": 1, "max_distractors": 2})
    selected = pd.read_csv(out / "selected.csv")
    assert len(selected) == 3 + 5 and (selected["landmark_id"] == -1).sum() == 5  # gldv2's cap does not apply
    assert json.loads((out / "report.json").read_text())["distractors_selected"] == 5


def test_stage_rejects_bad_params_with_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"gldv2.max_classes=-2 is not valid; use an integer >= 1 or null$"):
        run_stage(tmp_path, monkeypatch, train_rows({1: 1}), categories(1), dataset="gldv2",
                  gldv2={"max_classes": -2})
