"""The split and compute_stats stages: stratified, seeded, honest about dropped classes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmarks.gldv2 import NO_LANDMARK_ID
from landmarks.split import available_rows, check_fractions, class_table, stratified_split
from landmarks.stats import channel_stats
from stages import compute_stats, split as split_stage
from tests.conftest import make_image_tree

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _rows(counts: dict[int, int]) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"{lid & 0xFFFFFFFF:08x}{i:08x}", "landmark_id": lid} for lid, n in counts.items() for i in range(n)])


def _distractors(n: int) -> pd.DataFrame:
    return _rows({NO_LANDMARK_ID: n})


def test_split_is_stratified_60_20_20_and_disjoint() -> None:
    splits, dropped = stratified_split(_rows({1: 50, 2: 20, 3: 10}), fractions=FRACTIONS, seed=0, min_images_per_class=5)
    assert dropped == []
    counts = {name: frame["landmark_id"].value_counts().to_dict() for name, frame in splits.items()}
    assert counts["train"] == {1: 30, 2: 12, 3: 6} and counts["val"] == {1: 10, 2: 4, 3: 2} and counts["test"] == {1: 10, 2: 4, 3: 2}
    ids = [set(f["id"]) for f in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 80


def test_split_depends_on_the_seed_and_nothing_else() -> None:
    rows = _rows({1: 30, 2: 30})
    a, _ = stratified_split(rows, fractions=FRACTIONS, seed=1, min_images_per_class=5)
    b, _ = stratified_split(rows.sample(frac=1, random_state=7), fractions=FRACTIONS, seed=1, min_images_per_class=5)
    c, _ = stratified_split(rows, fractions=FRACTIONS, seed=2, min_images_per_class=5)
    assert a["test"].equals(b["test"])
    assert not a["test"].equals(c["test"])


def test_adding_a_class_does_not_reshuffle_the_others() -> None:
    a, _ = stratified_split(_rows({1: 30}), fractions=FRACTIONS, seed=1, min_images_per_class=5)
    b, _ = stratified_split(_rows({1: 30, 2: 30}), fractions=FRACTIONS, seed=1, min_images_per_class=5)
    assert set(a["test"]["id"]) == set(b["test"][b["test"]["landmark_id"] == 1]["id"])


def test_distractors_go_to_val_and_test_only_in_their_ratio() -> None:
    fractions = {"train": 0.6, "val": 0.1, "test": 0.3}
    splits, dropped = stratified_split(pd.concat([_rows({1: 20, 2: 10}), _distractors(40)]), fractions=fractions,
                                       seed=0, min_images_per_class=5)
    assert dropped == []
    n = {name: int((frame["landmark_id"] == NO_LANDMARK_ID).sum()) for name, frame in splits.items()}
    assert n == {"train": 0, "val": 10, "test": 30}  # val:test = 0.1:0.3
    ids = [set(f["id"][f["landmark_id"] == NO_LANDMARK_ID]) for f in splits.values()]
    assert not ids[1] & ids[2] and ids[1] | ids[2] == set(_distractors(40)["id"])
    splits, _ = stratified_split(pd.concat([_rows({1: 20}), _distractors(9)]), fractions=FRACTIONS, seed=0,
                                 min_images_per_class=5)
    counts = [int((f["landmark_id"] == NO_LANDMARK_ID).sum()) for f in splits.values()]
    assert counts[0] == 0 and sum(counts) == 9 and counts[1] in (4, 5)  # val:test = 1:1, as near as 9 allows


def test_distractors_do_not_change_the_classes_splits() -> None:
    classes = _rows({1: 30, 2: 12, 3: 7})
    without, dropped_a = stratified_split(classes, fractions=FRACTIONS, seed=3, min_images_per_class=5)
    with_d, dropped_b = stratified_split(pd.concat([_distractors(25), classes]), fractions=FRACTIONS, seed=3,
                                         min_images_per_class=5)
    assert dropped_a == dropped_b == []
    for name in without:
        known = with_d[name][with_d[name]["landmark_id"] != NO_LANDMARK_ID].reset_index(drop=True)
        assert known.equals(without[name]), name
    # a handful of distractors is kept even though it is below min_images_per_class: it is not a class
    splits, dropped = stratified_split(pd.concat([classes, _distractors(2)]), fractions=FRACTIONS, seed=3,
                                       min_images_per_class=5)
    assert dropped == [] and sum(int((f["landmark_id"] == NO_LANDMARK_ID).sum()) for f in splits.values()) == 2
    # the class table lists the classes only
    table = class_table(pd.DataFrame({"landmark_id": [1, 2, 3], "name": ["A", "B", "C"]}), with_d)
    assert table["landmark_id"].tolist() == [1, 2, 3]


def test_distractor_split_depends_on_the_seed_and_nothing_else() -> None:
    rows = pd.concat([_rows({1: 10}), _distractors(30)])
    a, _ = stratified_split(rows, fractions=FRACTIONS, seed=1, min_images_per_class=5)
    b, _ = stratified_split(rows.sample(frac=1, random_state=7), fractions=FRACTIONS, seed=1, min_images_per_class=5)
    c, _ = stratified_split(rows, fractions=FRACTIONS, seed=2, min_images_per_class=5)
    assert a["val"].equals(b["val"]) and a["test"].equals(b["test"])
    distractors = lambda s: set(s["val"]["id"][s["val"]["landmark_id"] == NO_LANDMARK_ID])  # noqa: E731
    assert distractors(a) != distractors(c)
    # adding a class does not move a distractor
    d, _ = stratified_split(pd.concat([rows, _rows({2: 10})]), fractions=FRACTIONS, seed=1, min_images_per_class=5)
    assert distractors(a) == distractors(d)


def test_distractors_alone_are_nothing_to_split() -> None:
    splits, _ = stratified_split(pd.concat([_rows({1: 2}), _distractors(10)]), fractions=FRACTIONS, seed=0,
                                 min_images_per_class=5)
    assert all(frame.empty for frame in splits.values())


def test_classes_below_the_minimum_are_dropped_and_reported() -> None:
    splits, dropped = stratified_split(_rows({1: 30, 2: 4}), fractions=FRACTIONS, seed=0, min_images_per_class=5)
    assert dropped == [{"landmark_id": 2, "images": 4}]
    assert set(pd.concat(splits.values())["landmark_id"]) == {1}


def test_small_classes_still_get_an_image_in_every_split() -> None:
    splits, _ = stratified_split(_rows({1: 3}), fractions=FRACTIONS, seed=0, min_images_per_class=3)
    assert [len(splits[n]) for n in ("train", "val", "test")] == [1, 1, 1]


@pytest.mark.parametrize("fractions,match", [
    ({"train": 0.6, "val": 0.3, "test": 0.2}, "add up to 1"),
    ({"train": 1.2, "val": -0.1, "test": -0.1}, "train fraction 1.2"),
])
def test_bad_fractions_are_a_one_line_error(fractions: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_fractions(fractions)


def test_rows_whose_image_is_missing_are_left_out(tmp_path) -> None:
    paths = make_image_tree(tmp_path, num_classes=2, per_class=4, size=16)
    selected = pd.read_csv(paths["selected"], dtype={"id": str})
    victim = selected.iloc[0]
    (paths["images"] / str(victim["landmark_id"]) / f"{victim['id']}.jpg").unlink()
    rows = available_rows(selected, paths["images"])
    assert len(rows) == 7 and victim["id"] not in set(rows["id"])


def test_class_table_is_in_landmark_id_order_with_per_split_counts() -> None:
    classes = pd.DataFrame({"landmark_id": [9, 3, 5], "name": ["C", "A", "B"], "category": ["", "", ""]})
    splits, _ = stratified_split(_rows({9: 10, 3: 10, 5: 2}), fractions=FRACTIONS, seed=0, min_images_per_class=5)
    table = class_table(classes, splits)
    assert table["landmark_id"].tolist() == [3, 9] and table["name"].tolist() == ["A", "C"]
    assert table[["n_train", "n_val", "n_test"]].iloc[0].tolist() == [6, 2, 2]


def test_channel_stats_match_numpy_on_the_pixels(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    stats = channel_stats(paths, image_size=64)  # no resize: images are smaller
    pixels = np.concatenate([a.reshape(-1, 3) for a in arrays]) / 255.0
    assert stats["mean"] == pytest.approx(pixels.mean(0).tolist(), abs=1e-6)
    assert stats["std"] == pytest.approx(pixels.std(0).tolist(), abs=1e-6)
    assert stats["num_images"] == 3


def test_split_and_stats_stages_write_the_contract_files(in_project, tmp_path) -> None:
    paths = make_image_tree(tmp_path / "tree", num_classes=3, per_class=10, size=24)
    broken = pd.read_csv(paths["selected"], dtype={"id": str})
    # one class loses most of its images to download failures
    for _, row in broken[broken["landmark_id"] == broken["landmark_id"].iloc[0]].iloc[:8].iterrows():
        (paths["images"] / str(row["landmark_id"]) / f"{row['id']}.jpg").unlink()
    # distractors as the download stage stores them: landmark_id -1, images under no_landmark/; one failed
    ids = [f"{0xD0 + i:016x}" for i in range(5)]
    (paths["images"] / "no_landmark").mkdir()
    for i in ids[:4]:
        Image.new("RGB", (24, 24), (90, 90, 90)).save(paths["images"] / "no_landmark" / f"{i}.jpg")
    selected = pd.concat([broken, pd.DataFrame({"id": ids, "url": "file:///x.jpg", "landmark_id": -1})])
    selected.to_csv(paths["selected"], index=False)
    split_stage.main(["--selected", str(paths["selected"]), "--classes", str(paths["classes"]), "--images", str(paths["images"]),
                      "--out", "data/splits", "--report", "reports/split.json"])
    report = json.loads(open("reports/split.json").read())
    assert report["classes"] == 2 and report["classes_dropped"] == 1 and report["images_available"] == 22 + 4
    assert report["distractors_train"] == 0 and report["distractors_val"] == 2 and report["distractors_test"] == 2
    for name in ("train", "val", "test"):
        frame = pd.read_csv(f"data/splits/{name}.csv", dtype={"id": str})
        assert {"id", "landmark_id"} <= set(frame.columns)
        assert report[f"images_{name}"] == len(frame)
        assert set(frame["id"][frame["landmark_id"] == -1]) <= set(ids[:4])
    assert pd.read_csv("data/splits/classes.csv")["landmark_id"].tolist() == sorted(set(broken["landmark_id"]))[1:]
    compute_stats.main(["--splits", "data/splits", "--images", str(paths["images"]), "--out", "data/stats.json"])
    stats = json.loads(open("data/stats.json").read())
    assert len(stats["mean"]) == 3 and len(stats["std"]) == 3 and all(0 < s < 1 for s in stats["std"])


def test_bad_split_param_stops_the_stage_with_a_one_line_error(in_project, tiny_params, tmp_path) -> None:
    import yaml

    tiny_params["split"]["val"] = 0.5
    (in_project / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    paths = make_image_tree(tmp_path / "tree", num_classes=2, per_class=5, size=16)
    with pytest.raises(SystemExit) as e:
        split_stage.main(["--selected", str(paths["selected"]), "--classes", str(paths["classes"]), "--images", str(paths["images"]),
                          "--out", "data/splits", "--report", "reports/split.json"])
    assert "add up to 1" in str(e.value.code) and "\n" not in str(e.value.code)
