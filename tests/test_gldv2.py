"""GLDv2 metadata: parsing the real formats, naming landmarks, fetching the CSVs resumably, folder datasets."""
from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from landmarks.fetch import fetch_file
from landmarks.folder import image_id, scan_folder
from landmarks.gldv2 import category_name, is_valid_id, read_categories, read_train_csv
from landmarks.http import FetchError
from landmarks.select import select_classes
from tests.faultserver import Cut, Drip, FaultServer, Respond, make_jpeg

REPO = Path(__file__).resolve().parents[1]
# CI runs in a fresh clone with shared/ beside it; never an absolute path.
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "gldv2-samples"
TRAIN_EXCERPT = SAMPLES / "train.csv.excerpt"
CATEGORY_EXCERPT = SAMPLES / "label_to_category_with_coordinates.csv.excerpt"
needs_samples = pytest.mark.skipif(
    not TRAIN_EXCERPT.is_file() or not CATEGORY_EXCERPT.is_file(),
    reason=f"real GLDv2 sample rows not found in {SAMPLES} (expected shared/gldv2-samples beside the checkout)",
)


def raw_rows(path: Path) -> list[dict[str, str]]:
    """The rows as Python's csv module reads them: the reference for exact text."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_samples
def test_real_train_rows_parse_exactly():
    df = read_train_csv(TRAIN_EXCERPT)
    expected = raw_rows(TRAIN_EXCERPT)
    assert df.columns.tolist() == ["id", "url", "landmark_id"] and len(df) == len(expected) == 10
    assert df["landmark_id"].dtype == "int64"
    assert df["landmark_id"].tolist() == [int(r["landmark_id"]) for r in expected]
    assert df["id"].tolist() == [r["id"] for r in expected]
    assert all(is_valid_id(i) for i in df["id"])
    assert df["url"].tolist() == [r["url"] for r in expected]  # percent-encoding kept as is
    assert any("%E2%80%98624%E2%80%99" in u for u in df["url"])
    assert {u.split("://")[0] for u in df["url"]} == {"http", "https"}


@needs_samples
def test_real_categories_keep_extra_columns_and_give_readable_names():
    cats = read_categories(CATEGORY_EXCERPT)
    expected = raw_rows(CATEGORY_EXCERPT)
    assert cats.columns.tolist() == ["landmark_id", "category", "wikidata_id", "latitude", "longitude"]
    assert cats["landmark_id"].tolist() == [int(r["landmark_id"]) for r in expected]
    assert cats["latitude"].tolist() == [r["latitude"] for r in expected]  # exact text, no float rounding
    names = dict(zip(cats["landmark_id"], map(category_name, cats["category"])))
    assert names[7] == "Sparkassen-Arena, Göttingen"
    assert names[3] == "Tweed Heads, New South Wales"
    assert names[0] == "Happy Valley Racecourse"
    assert names[4] == "Santa Maria Immacolata della Concezione (Rome)"


@needs_samples
def test_real_rows_go_through_selection():
    sel = select_classes(read_train_csv(TRAIN_EXCERPT), read_categories(CATEGORY_EXCERPT), min_images_per_class=0,
                         max_images_per_class=None, max_classes=None, seed=0, allowed_schemes=("http", "https"))
    assert sum(sel.dropped.values()) == 0 and len(sel.selected) == 10
    assert set(sel.selected["url"]) == {r["url"] for r in raw_rows(TRAIN_EXCERPT)}
    # None of these landmarks is in the 10-row category excerpt.
    assert sel.classes.set_index("landmark_id").loc[140690, "name"] == "landmark 140690"
    assert sel.classes.set_index("landmark_id").loc[140690, "num_available"] == 4


@pytest.mark.parametrize("category,name", [
    ("http://commons.wikimedia.org/wiki/Category:Eiffel_Tower", "Eiffel Tower"),
    ("https://commons.wikimedia.org/wiki/Category:Sparkassen-Arena,_G%C3%B6ttingen", "Sparkassen-Arena, Göttingen"),
    ("http://commons.wikimedia.org/wiki/Category%3AK%C3%B6lner_Dom", "Kölner Dom"),
    ("http://commons.wikimedia.org/wiki/Category:100%25_Pure", "100% Pure"),
    ("Eiffel_Tower", "Eiffel_Tower"),  # a folder name is the name itself
    ("Caf%C3%A9 de Flore", "Caf%C3%A9 de Flore"),
])
def test_category_name(category, name):
    assert category_name(category) == name


def test_is_valid_id():
    assert is_valid_id("7e4627eb6f721857")
    for bad in ("7E4627EB6F721857", "7e4627eb6f72185", "7e4627eb6f7218570", "../../etc/passw", "", None, 12):
        assert not is_valid_id(bad)


def test_bad_landmark_ids_become_missing_instead_of_failing_the_read(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,url,landmark_id\naaaaaaaaaaaaaaaa,http://x/a.jpg,5\nbbbbbbbbbbbbbbbb,http://x/b.jpg,abc\n"
                    "cccccccccccccccc,http://x/c.jpg,3.5\ndddddddddddddddd,\"http://x/d,e.jpg\",7\n")
    df = read_train_csv(path)
    assert df["landmark_id"].tolist()[0] == 5 and df["landmark_id"].isna().tolist() == [False, True, True, False]
    assert df["url"].tolist()[3] == "http://x/d,e.jpg"


def test_header_only_and_missing_columns(tmp_path):
    (tmp_path / "empty.csv").write_text("id,url,landmark_id\n")
    assert read_train_csv(tmp_path / "empty.csv").empty
    (tmp_path / "wrong.csv").write_text("image,landmark\n")
    with pytest.raises(ValueError, match="missing column"):
        read_train_csv(tmp_path / "wrong.csv")


# ---------------------------------------------------------------------------------------------
# Fetching the metadata

DATA = b"id,url,landmark_id\n" + b"".join(b"%016x,https://example.org/%d.jpg,%d\n" % (i, i, i % 7) for i in range(5000))
SHA = hashlib.sha256(DATA).hexdigest()
AGENT = "landmarks-tests/1.0 (tests@example.com)"


def test_fetch_resumes_a_transfer_cut_midway(tmp_path):
    with FaultServer() as server:
        url = server.route("/train.csv", Cut(DATA, at=len(DATA) // 3), Respond(body=DATA, content_type="text/csv"))
        record = fetch_file(url, tmp_path / "train.csv", backoff=0.01, user_agent=AGENT, progress=False)
        ranges = [h.get("Range") for _, h in server.requests]
    assert record == {"url": url, "size": len(DATA), "sha256": SHA}
    assert (tmp_path / "train.csv").read_bytes() == DATA
    assert ranges == [None, f"bytes={len(DATA) // 3}-"]  # the second request continued, not restarted
    assert not list(tmp_path.glob("*.part"))


def test_fetch_resumes_after_the_previous_run_was_killed(tmp_path):
    partial = tmp_path / "raw.partial"
    with FaultServer() as server:
        url = server.route("/train.csv", Cut(DATA, at=1000), Respond(body=DATA, content_type="text/csv"))
        with pytest.raises(FetchError):
            fetch_file(url, tmp_path / "raw" / "train.csv", partial_dir=partial, max_retries=0, user_agent=AGENT, progress=False)
        assert not (tmp_path / "raw" / "train.csv").exists()  # never a partial file under the final name
        assert (partial / "train.csv.part").stat().st_size == 1000
        record = fetch_file(url, tmp_path / "raw" / "train.csv", partial_dir=partial, user_agent=AGENT, progress=False)
        assert server.requests[-1][1]["Range"] == "bytes=1000-"
    assert record["sha256"] == SHA and (tmp_path / "raw" / "train.csv").read_bytes() == DATA


def test_fetch_restarts_when_the_server_ignores_range(tmp_path):
    with FaultServer() as server:
        url = server.route("/t.csv", Cut(DATA, at=500), Respond(body=DATA, ranges=False))
        record = fetch_file(url, tmp_path / "t.csv", backoff=0.01, user_agent=AGENT, progress=False)
    assert record["sha256"] == SHA and record["size"] == len(DATA)


def test_fetch_finishes_when_the_part_is_already_complete(tmp_path):
    (tmp_path / "t.csv.part").write_bytes(DATA)
    with FaultServer() as server:
        url = server.route("/t.csv", Respond(body=DATA))
        record = fetch_file(url, tmp_path / "t.csv", user_agent=AGENT, progress=False)
    assert record["sha256"] == SHA and server.requests[0][1]["Range"] == f"bytes={len(DATA)}-"


def test_fetch_checks_sha256_and_reports_http_errors(tmp_path):
    with FaultServer() as server:
        url = server.route("/t.csv", Respond(body=DATA))
        with pytest.raises(FetchError, match="sha256_mismatch"):
            fetch_file(url, tmp_path / "t.csv", expected_sha256="0" * 64, user_agent=AGENT, progress=False)
        assert not (tmp_path / "t.csv").exists()
        with pytest.raises(FetchError, match="http_404"):
            fetch_file(server.url("/nothing.csv"), tmp_path / "n.csv", user_agent=AGENT, progress=False)


def test_fetch_copies_a_file_url(tmp_path):
    src = tmp_path / "mirror" / "train.csv"
    src.parent.mkdir()
    src.write_bytes(DATA)
    record = fetch_file(src.as_uri(), tmp_path / "out" / "train.csv", user_agent=AGENT, progress=False)
    assert record["sha256"] == SHA and (tmp_path / "out" / "train.csv").read_bytes() == DATA


def test_fetch_gives_up_on_a_server_that_only_drips(tmp_path):
    partial = tmp_path / "partial"
    with FaultServer() as server:
        url = server.route("/t.csv", Drip(DATA, step=50, interval=0.1))  # 500 B/s: ~8 minutes for DATA
        start = time.monotonic()
        with pytest.raises(FetchError, match="stalled"):
            fetch_file(url, tmp_path / "t.csv", partial_dir=partial, user_agent=AGENT, max_retries=2, backoff=0.01,
                       stall_bytes=10_000, stall_seconds=0.5, progress=False)
        elapsed = time.monotonic() - start
        ranges = [h.get("Range") for _, h in server.requests]
    # Each attempt is abandoned after one window; a trickle is not progress, so max_retries bounds them.
    assert len(ranges) == 3 and elapsed < 3 * 0.5 + 3
    kept = (partial / "t.csv.part").stat().st_size
    resumed_at = [int(r[len("bytes="):-1]) for r in ranges[1:]]
    assert ranges[0] is None and 0 < resumed_at[0] < resumed_at[1] < kept < 10_000  # each retry resumed the part
    assert not (tmp_path / "t.csv").exists()


def test_fetch_keeps_going_while_each_attempt_brings_real_progress(tmp_path):
    with FaultServer() as server:
        # 100 kB at once, then a trickle: every attempt stalls, but only after real progress.
        url = server.route("/t.csv", Drip(DATA, head=100_000, step=50, interval=0.1))
        record = fetch_file(url, tmp_path / "t.csv", user_agent=AGENT, max_retries=1, backoff=0.01,
                            stall_bytes=10_000, stall_seconds=0.3, progress=False)
        ranges = [h.get("Range") for _, h in server.requests]
    assert record["sha256"] == SHA and (tmp_path / "t.csv").read_bytes() == DATA
    assert len(ranges) >= 3 and ranges[0] is None  # more attempts than max_retries + 1: each one resumed
    resumed_at = [int(r[len("bytes="):-1]) for r in ranges[1:]]
    assert resumed_at == sorted(set(resumed_at)) and resumed_at[0] >= 100_000


# ---------------------------------------------------------------------------------------------
# Folder datasets and the fetch_csv stage


def make_photos(root: Path) -> None:
    for folder, files in {"Tour_Eiffel": ["a.jpg", "b.jpg"], "Kölner Dom": ["x.jpg", "sub/y.jpg", "notes.txt"],
                          "100% Sagrada": ["z.jpg"]}.items():
        for name in files:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_jpeg(40, 30) if name.endswith(".jpg") else b"hello")
    (root / "README.md").write_text("top-level files belong to no landmark")
    (root / "Tour_Eiffel" / ".DS_Store").write_bytes(b"\0")


def test_scan_folder_is_deterministic_and_lists_every_file(tmp_path):
    make_photos(tmp_path)
    scan = scan_folder(tmp_path)
    assert scan.categories["category"].tolist() == ["100% Sagrada", "Kölner Dom", "Tour_Eiffel"]  # sorted -> 0..n-1
    assert scan.categories["landmark_id"].tolist() == [0, 1, 2]
    assert scan.train["landmark_id"].tolist() == [0, 1, 1, 1, 2, 2]
    assert image_id("Kölner Dom/notes.txt") in scan.train["id"].tolist()  # listed; download reports it
    assert all(is_valid_id(i) for i in scan.train["id"]) and scan.train["id"].is_unique
    assert scan.skipped_hidden == 1 and scan.skipped_top_level == 1
    assert scan_folder(tmp_path).train.equals(scan.train)


def run_stage_main(stage: str, argv: list[str], cwd: Path, monkeypatch, params: dict) -> None:
    """Run `stages.<stage>.main()` in `cwd` with argv, and params.yaml = the real one updated by
    `params` (a dict value updates that section)."""
    import importlib

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in params.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    (cwd / "params.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [stage, *argv])
    importlib.import_module(f"stages.{stage}").main()


def run_fetch_csv(tmp_path: Path, monkeypatch, params: dict) -> Path:
    run_stage_main("fetch_csv", ["--folder", str(tmp_path / "photos"), "--out", "data/raw"], tmp_path, monkeypatch, params)
    return tmp_path / "data" / "raw"


def test_fetch_csv_folder_mode_round_trips_folder_names(tmp_path, monkeypatch):
    make_photos(tmp_path / "photos")
    raw = run_fetch_csv(tmp_path, monkeypatch, {"dataset": "folder"})
    train = read_train_csv(raw / "train.csv")
    sel = select_classes(train, read_categories(raw / "label_to_category.csv"), min_images_per_class=0,
                         max_images_per_class=None, max_classes=None, seed=0,
                         allowed_schemes=("http", "https", "file"))
    assert sel.classes["name"].tolist() == ["100% Sagrada", "Kölner Dom", "Tour_Eiffel"]
    assert len(sel.selected) == 6 and all(u.startswith("file:///") for u in sel.selected["url"])
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["files"]["train.csv"]["sha256"] == hashlib.sha256((raw / "train.csv").read_bytes()).hexdigest()


def test_fetch_csv_gldv2_mode_downloads_and_records_the_metadata(tmp_path, monkeypatch):
    cats = b"landmark_id,category\n0,http://commons.wikimedia.org/wiki/Category:Eiffel_Tower\n"
    with FaultServer() as server:
        train_url = server.route("/train.csv", Cut(DATA, at=3000), Respond(body=DATA))
        cat_url = server.route("/cats.csv", Respond(body=cats))
        raw = run_fetch_csv(tmp_path, monkeypatch, {"dataset": "gldv2", "download": {"user_agent": AGENT}, "gldv2": {
            "metadata_url": train_url, "category_url": cat_url, "distractor_shards": 0}})
        agents = [headers.get("User-Agent") for _, headers in server.requests]
    assert agents == [AGENT] * 3  # the cut train.csv, its resumption and the categories: all name us as configured
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["files"]["train.csv"] == {"source": train_url, "size": len(DATA), "sha256": SHA}
    assert manifest["files"]["label_to_category.csv"]["sha256"] == hashlib.sha256(cats).hexdigest()
    assert (raw / "train.csv").read_bytes() == DATA
    assert not (tmp_path / "data" / "raw.partial").exists()


@pytest.mark.parametrize("agent", ["", "two\nlines", None])
def test_fetch_csv_rejects_a_bad_user_agent_before_any_request(tmp_path, monkeypatch, agent):
    with pytest.raises(SystemExit, match=r"^error: download.user_agent=.* is not valid; use a non-empty one-line string"):
        run_fetch_csv(tmp_path, monkeypatch, {"dataset": "gldv2", "download": {"user_agent": agent},
                                              "gldv2": {"metadata_url": "http://127.0.0.1:9/train.csv"}})


def test_fetch_csv_rejects_a_bad_metadata_url(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="gldv2.metadata_url='ftp://x/train.csv' is not valid"):
        run_fetch_csv(tmp_path, monkeypatch, {"dataset": "gldv2", "gldv2": {"metadata_url": "ftp://x/train.csv"}})


def test_fetch_csv_synthetic_mode_writes_all_three_csvs(tmp_path, monkeypatch):
    pytest.importorskip("landmarks.synthetic", reason="landmarks/synthetic/ is not in this tree yet")
    raw = run_fetch_csv(tmp_path, monkeypatch, {"dataset": "synthetic", "seed": 3, "synthetic": {
        "num_classes": 3, "images_per_class": 2, "image_size": 32, "distractor_fraction": 0.5}})
    train = read_train_csv(raw / "train.csv")
    cats = read_categories(raw / "label_to_category.csv")
    assert len(train) == 6 and train["landmark_id"].nunique() == 3 and set(cats["landmark_id"]) == set(train["landmark_id"])
    assert all(u.startswith("file://") for u in train["url"])
    distractors = pd.read_csv(raw / "distractors.csv", dtype=str)
    assert list(distractors.columns) == ["id", "url"] and len(distractors) == 6
    assert not set(distractors["id"]) & set(train["id"]) and all(u.startswith("file://") for u in distractors["url"])
    assert set(json.loads((raw / "manifest.json").read_text())["files"]) == {"train.csv", "label_to_category.csv",
                                                                             "distractors.csv"}


def test_fetch_csv_synthetic_mode_rejects_a_bad_distractor_fraction(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"synthetic\.distractor_fraction=0\.95 is not valid; use a number in \[0, 0\.9\]"):
        run_fetch_csv(tmp_path, monkeypatch, {"dataset": "synthetic", "synthetic": {"distractor_fraction": 0.95}})
