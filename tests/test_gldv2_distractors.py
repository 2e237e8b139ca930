"""GLDv2 distractors: the non-landmark photos of the test shards, fetched and extracted by fetch_csv.

The stage runs for real against a local server with a generated solution CSV and TAR shards that
mix what a real shard holds (directories, non-landmark and landmark photos) with what a crafted
one could (path traversal, absolute names, links, other file types, duplicates).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from landmarks import gldv2_distractors as gd
from landmarks import http as landmarks_http
from landmarks.gldv2 import DISTRACTOR_COLUMNS
from tests.faultserver import Cut, FaultServer, Respond, make_jpeg
from tests.test_gldv2 import run_fetch_csv

TRAIN = b"id,url,landmark_id\n" + b"".join(b"%016x,https://example.org/%d.jpg,%d\n" % (i, i, i % 3) for i in range(30))
CATS = b"landmark_id,category\n0,http://commons.wikimedia.org/wiki/Category:Eiffel_Tower\n"


def hex_id(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:16]


def nested(image_id: str, suffix: str = ".jpg") -> str:
    """A member name as in the real shards: a/b/c/abc....jpg."""
    return f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}{suffix}"


class Shard:
    """A generated test shard: its tar bytes and which non-landmark photos it holds."""

    def __init__(self, index: int, tmp: Path) -> None:
        self.non_landmark = {hex_id(f"nl-{index}-{i}"): make_jpeg(24 + i, 20, seed=100 * index + i) for i in range(5)}
        self.landmark = [hex_id(f"lm-{index}-{i}") for i in range(2)]
        self.unlisted = hex_id(f"unlisted-{index}")  # in the shard, not in the solution
        # Non-landmark ids that only crafted members carry: none of them may be kept.
        self.crafted = {k: hex_id(f"{k}-{index}") for k in ("traversal", "absolute", "symlink", "hardlink", "png")}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            def add(name: str, data: bytes = b"", **attrs: object) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                for key, value in attrs.items():
                    setattr(info, key, value)
                tar.addfile(info, io.BytesIO(data) if data else None)

            first = next(iter(self.non_landmark))
            add(first[0], type=tarfile.DIRTYPE)
            add(f"{first[0]}/{first[1]}", type=tarfile.DIRTYPE)
            for image_id, data in self.non_landmark.items():
                add(nested(image_id), data)
            for image_id in self.landmark:
                add(nested(image_id), make_jpeg(16, 16, seed=7))
            add(nested(self.unlisted), make_jpeg(16, 16, seed=8))
            add(nested(first), b"a second copy must not replace the first")
            add("../../evil.jpg", make_jpeg(16, 16, seed=9))
            add(f"../../{self.crafted['traversal']}.jpg", make_jpeg(16, 16, seed=10))
            add(f"{tmp}/abs/{self.crafted['absolute']}.jpg", make_jpeg(16, 16, seed=11))
            add(nested(self.crafted["symlink"]), type=tarfile.SYMTYPE, linkname="/etc/passwd")
            add(nested(self.crafted["hardlink"]), type=tarfile.LNKTYPE, linkname=nested(first))
            add(nested(self.crafted["png"], ".png"), make_jpeg(16, 16, seed=12))
            add("README.txt", b"not a photo")
        self.tar = buf.getvalue()
        self.members = 2 + len(self.non_landmark) + len(self.landmark) + 1 + 1 + 7


def solution_csv(shards: list[Shard]) -> bytes:
    lines = ["id,landmarks,Usage"]
    for shard in shards:
        lines += [f"{i},,Private" for i in shard.non_landmark]
        lines += [f"{i},,Public" for i in shard.crafted.values()]
        lines += [f"{i},{1000 + n} 77,Public" for n, i in enumerate(shard.landmark)]
    lines += [f"{hex_id('elsewhere')},,Private",  # in a shard that is not fetched
              f"{hex_id('blank')}, ,Private",  # blank counts as empty
              "NOT-AN-ID,,Private", "ABCDEF0123456789,,Public"]  # invalid ids: dropped, counted
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries without the real backoff's sleeps: the tests stay fast, the code paths are the same."""
    monkeypatch.setattr(landmarks_http, "backoff_delay", lambda *a, **k: 0.0)


@pytest.fixture
def shards(tmp_path) -> list[Shard]:
    return [Shard(0, tmp_path), Shard(1, tmp_path)]


def serve(server: FaultServer, shards: list[Shard], *shard0_actions) -> dict:
    """Route the metadata, the solution and the shards; returns the gldv2 params pointing at them."""
    server.route("/ground_truth/solution.csv", Respond(body=solution_csv(shards), content_type="text/csv"))
    for i, shard in enumerate(shards):
        actions = shard0_actions if i == 0 and shard0_actions else (Respond(body=shard.tar, content_type="application/x-tar"),)
        server.route(f"/test/images_{i:03d}.tar", *actions)
    return {"metadata_url": server.route("/train.csv", Respond(body=TRAIN, content_type="text/csv")),
            "category_url": server.route("/cats.csv", Respond(body=CATS, content_type="text/csv")),
            "solution_url": server.url("/ground_truth/solution.csv"),
            "test_shard_url": server.url("/test/images_{shard:03d}.tar")}


def run(tmp_path, monkeypatch, gldv2: dict) -> Path:
    return run_fetch_csv(tmp_path, monkeypatch, {"dataset": "gldv2", "gldv2": gldv2})


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def check_distractors(raw: Path, shards: list[Shard]) -> pd.DataFrame:
    """distractors.csv lists exactly the shards' non-landmark photos, sorted, byte-identical."""
    df = pd.read_csv(raw / "distractors.csv", dtype=str, keep_default_na=False)
    expected = {i: data for shard in shards for i, data in shard.non_landmark.items()}
    assert df.columns.tolist() == list(DISTRACTOR_COLUMNS)
    assert df["id"].tolist() == sorted(expected)
    for image_id, url in zip(df["id"], df["url"]):
        path = raw / "distractors" / f"{image_id}.jpg"
        assert url == path.absolute().as_uri()
        assert path.read_bytes() == expected[image_id]
    assert files_under(raw / "distractors") == {f"{i}.jpg" for i in expected}
    return df


def test_keeps_exactly_the_non_landmark_photos_of_the_shards_asked_for(tmp_path, monkeypatch, shards, capsys):
    agent = "distractor-tests/1.0 (tests@example.com)"
    with FaultServer() as server:
        raw = run_fetch_csv(tmp_path, monkeypatch, {"dataset": "gldv2", "download": {"user_agent": agent},
                                                    "gldv2": {**serve(server, shards), "distractor_shards": 1}})
        assert server.count("/test/images_000.tar") == 1
        assert server.count("/test/images_001.tar") == 0  # only as many shards as the param asks for
        # metadata, solution and shard requests all name us as params.yaml says
        assert {h.get("User-Agent") for _, h in server.requests} == {agent} and len(server.requests) == 4
    check_distractors(raw, shards[:1])
    # Nothing was written anywhere else: not by traversal, not by absolute names, no tar left over.
    outputs = {"train.csv", "label_to_category.csv", "recognition_solution.csv", "distractors.csv", "manifest.json"}
    assert files_under(tmp_path) == {"params.yaml"} | {f"data/raw/{f}" for f in outputs} | {
        f"data/raw/distractors/{i}.jpg" for i in shards[0].non_landmark}
    assert not (tmp_path / "abs").exists() and not (tmp_path.parent.parent / "evil.jpg").exists()
    assert not (tmp_path / "data" / "raw.partial").exists()

    manifest = json.loads((raw / "manifest.json").read_text())["files"]
    assert manifest["test/images_000.tar"] == {"source": server.url("/test/images_000.tar"), "size": len(shards[0].tar),
                                               "sha256": hashlib.sha256(shards[0].tar).hexdigest()}
    solution = solution_csv(shards)
    assert manifest["recognition_solution.csv"]["sha256"] == hashlib.sha256(solution).hexdigest()
    assert (raw / "recognition_solution.csv").read_bytes() == solution
    assert manifest["distractors.csv"]["sha256"] == hashlib.sha256((raw / "distractors.csv").read_bytes()).hexdigest()
    assert "test/images_001.tar" not in manifest

    err = capsys.readouterr().err
    assert "22 without a landmark, 4 with one; dropped 2 rows with an invalid id" in err
    assert (f"{shards[0].members} members, kept 5; skipped 2 landmark images, 1 not in the solution, 1 duplicates, "
            "5 invalid names, 2 directories, 2 links or other non-regular files") in err


def test_two_shards_and_a_rerun_give_the_same_files(tmp_path, monkeypatch, shards):
    with FaultServer() as server:
        params = {**serve(server, shards), "distractor_shards": 2}
        raw = run(tmp_path, monkeypatch, params)
        first = check_distractors(raw, shards)
        csv = (raw / "distractors.csv").read_bytes()
        shutil.rmtree(raw)  # what DVC does before rerunning the stage
        run(tmp_path, monkeypatch, params)
        assert server.count("/test/images_000.tar") == server.count("/test/images_001.tar") == 2
    assert check_distractors(raw, shards).equals(first) and (raw / "distractors.csv").read_bytes() == csv
    assert set(json.loads((raw / "manifest.json").read_text())["files"]) >= {"test/images_000.tar", "test/images_001.tar"}


def test_zero_shards_write_an_empty_list_and_fetch_nothing(tmp_path, monkeypatch, shards):
    with FaultServer() as server:
        raw = run(tmp_path, monkeypatch, {**serve(server, shards), "distractor_shards": 0})
        paths = {p for p, _ in server.requests}
    assert paths == {"/train.csv", "/cats.csv"}  # neither the solution nor any shard
    assert (raw / "distractors.csv").read_text() == "id,url\n"
    assert not (raw / "distractors").exists() or not any((raw / "distractors").iterdir())
    assert "distractors.csv" in json.loads((raw / "manifest.json").read_text())["files"]


def test_a_shard_cut_midway_resumes_with_a_range_request(tmp_path, monkeypatch, shards, no_backoff):
    cut = len(shards[0].tar) // 3
    with FaultServer() as server:
        params = serve(server, shards, Cut(shards[0].tar, at=cut), Respond(body=shards[0].tar))
        raw = run(tmp_path, monkeypatch, {**params, "distractor_shards": 1})
        ranges = [h.get("Range") for p, h in server.requests if p == "/test/images_000.tar"]
    assert ranges == [None, f"bytes={cut}-"]
    check_distractors(raw, shards[:1])


def test_a_killed_download_continues_in_the_next_run(tmp_path, monkeypatch, shards, no_backoff):
    cut = len(shards[0].tar) // 2
    partial = tmp_path / "data" / "raw.partial"
    with FaultServer() as server:
        # The connection drops midway, then the server goes away: the run fails as a killed one would.
        params = {**serve(server, shards, Cut(shards[0].tar, at=cut), Respond(503), Respond(404)), "distractor_shards": 1}
        with pytest.raises(SystemExit, match=r"^error: could not fetch gldv2.test_shard_url=.*images_000.tar: http_404"):
            run(tmp_path, monkeypatch, params)
        assert (partial / "test_images_000.tar.part").stat().st_size == cut
        shutil.rmtree(tmp_path / "data" / "raw")  # DVC deletes the output, never the .partial folder
        server.route("/test/images_000.tar", Respond(body=shards[0].tar))
        server.clear_log()
        raw = run(tmp_path, monkeypatch, params)
        ranges = [h.get("Range") for p, h in server.requests if p == "/test/images_000.tar"]
    assert ranges == [f"bytes={cut}-"]  # the first half was not downloaded again
    check_distractors(raw, shards[:1])
    assert not partial.exists()


def test_a_shard_downloaded_before_extraction_was_killed_is_not_downloaded_again(tmp_path, monkeypatch, shards):
    partial = tmp_path / "data" / "raw.partial"
    with FaultServer() as server:
        params = {**serve(server, shards), "distractor_shards": 1}

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(gd, "atomic_write_bytes", interrupted)
            with pytest.raises(KeyboardInterrupt):
                run(tmp_path, monkeypatch, params)
        assert (partial / "test_images_000.tar").read_bytes() == shards[0].tar
        shutil.rmtree(tmp_path / "data" / "raw")
        server.clear_log()
        raw = run(tmp_path, monkeypatch, params)
        ranges = [h.get("Range") for p, h in server.requests if p == "/test/images_000.tar"]
    size = len(shards[0].tar)
    assert ranges == [f"bytes={size}-"]  # answered 416: nothing sent, the local copy is complete
    check_distractors(raw, shards[:1])
    manifest = json.loads((raw / "manifest.json").read_text())["files"]
    assert manifest["test/images_000.tar"]["sha256"] == hashlib.sha256(shards[0].tar).hexdigest()
    assert not partial.exists()


def test_a_corrupt_shard_is_an_error_and_is_deleted(tmp_path, monkeypatch, shards):
    broken = shards[0].tar[: len(shards[0].tar) // 2]  # complete as a download, truncated as a tar
    with FaultServer() as server:
        params = {**serve(server, shards, Respond(body=broken)), "distractor_shards": 1}
        with pytest.raises(SystemExit, match=r"^error: .*images_000.tar is not a readable tar archive"):
            run(tmp_path, monkeypatch, params)
    assert not any((tmp_path / "data" / "raw.partial").glob("test_images_*"))  # the rerun fetches it afresh


def test_file_urls_are_read_in_place(tmp_path, monkeypatch, shards):
    mirror = tmp_path / "mirror"
    (mirror / "test").mkdir(parents=True)
    for i, shard in enumerate(shards):
        (mirror / "test" / f"images_{i:03d}.tar").write_bytes(shard.tar)
    (mirror / "solution.csv").write_bytes(solution_csv(shards))
    for name, data in (("train.csv", TRAIN), ("cats.csv", CATS)):
        (mirror / name).write_bytes(data)
    work = tmp_path / "work"
    work.mkdir()
    raw = run(work, monkeypatch, {"metadata_url": (mirror / "train.csv").as_uri(), "category_url": (mirror / "cats.csv").as_uri(),
                                  "solution_url": (mirror / "solution.csv").as_uri(),
                                  "test_shard_url": mirror.as_uri() + "/test/images_{shard:03d}.tar", "distractor_shards": 2})
    check_distractors(raw, shards)
    assert all((mirror / "test" / f"images_{i:03d}.tar").read_bytes() == s.tar for i, s in enumerate(shards))  # not deleted


def test_oversize_members_are_skipped(tmp_path, shards):
    solution = gd.Solution(non_landmark=set(shards[0].non_landmark), landmark=set(), rows=5, invalid=0)
    (tmp_path / "s.tar").write_bytes(shards[0].tar)
    limit = sorted(map(len, shards[0].non_landmark.values()))[2]
    kept: set[str] = set()
    stats = gd.extract_shard(tmp_path / "s.tar", solution, tmp_path / "out", kept, max_bytes=limit)
    small = {i for i, data in shards[0].non_landmark.items() if len(data) <= limit}
    assert kept == small and stats.kept == len(small) and stats.skipped["oversize"] == 5 - len(small)
    assert files_under(tmp_path / "out") == {f"{i}.jpg" for i in small}


@pytest.mark.parametrize("name,image_id", [
    ("a/b/c/abc0123456789def.jpg", "abc0123456789def"),
    ("abc0123456789def.JPG", "abc0123456789def"),
    ("./a/abc0123456789def.jpg", "abc0123456789def"),
    ("../abc0123456789def.jpg", None),
    ("a/../../abc0123456789def.jpg", None),
    ("/abc0123456789def.jpg", None),
    ("..\\..\\abc0123456789def.jpg", None),
    ("abc0123456789def.png", None),
    ("ABC0123456789DEF.jpg", None),
    ("a/b/c/abc0123456789de.jpg", None),
    ("a/b/c/", None),
])
def test_member_id(name, image_id):
    assert gd.member_id(name) == image_id


def test_read_solution_counts(tmp_path, shards):
    (tmp_path / "s.csv").write_bytes(solution_csv(shards))
    s = gd.read_solution(tmp_path / "s.csv")
    assert s.rows == 2 * (5 + 5 + 2) + 4 and s.invalid == 2
    assert s.non_landmark == {i for sh in shards for i in [*sh.non_landmark, *sh.crafted.values()]} | {hex_id("elsewhere"), hex_id("blank")}
    assert s.landmark == {i for sh in shards for i in sh.landmark}
    (tmp_path / "bad.csv").write_text("id,landmark_id\n")
    with pytest.raises(gd.DistractorError, match="missing column"):
        gd.read_solution(tmp_path / "bad.csv")


@pytest.mark.parametrize("key,value,message", [
    ("distractor_shards", True, "error: gldv2.distractor_shards=True is not valid; use an integer in 0..20"),
    ("distractor_shards", -1, "error: gldv2.distractor_shards=-1 is not valid"),
    ("distractor_shards", 21, "error: gldv2.distractor_shards=21 is not valid"),
    ("distractor_shards", "1", "error: gldv2.distractor_shards='1' is not valid"),
    ("distractor_shards", 1.0, "error: gldv2.distractor_shards=1.0 is not valid"),
    ("distractor_shards", None, "error: gldv2.distractor_shards=None is not valid"),
    ("solution_url", "ftp://x/s.csv", "error: gldv2.solution_url='ftp://x/s.csv' is not valid"),
    ("test_shard_url", "https://x/images_000.tar", "error: gldv2.test_shard_url='https://x/images_000.tar' is not valid; use a URL with {shard} in it"),
    ("test_shard_url", "https://x/{shard}/{other}.tar", "error: gldv2.test_shard_url='https://x/{shard}/{other}.tar' is not valid; use a URL with {shard} in it, e.g. .../test/images_{shard:03d}.tar, and no other"),
    ("test_shard_url", "https://x/{shard:q}.tar", "error: gldv2.test_shard_url='https://x/{shard:q}.tar' is not valid; use a URL with {shard} in it"),
    ("test_shard_url", "https://x/{shard:.0s}.tar", "error: gldv2.test_shard_url='https://x/{shard:.0s}.tar' is not valid"),
    ("test_shard_url", "https://x/{shard:03d}{", "error: gldv2.test_shard_url='https://x/{shard:03d}{' is not valid; use a URL with {shard} in it"),
    ("test_shard_url", "s3://google-landmark/{shard}.tar", "error: gldv2.test_shard_url='s3://google-landmark/{shard}.tar' is not valid"),
    ("test_shard_url", 3, "error: gldv2.test_shard_url=3 is not valid"),
])
def test_bad_params_stop_before_any_download(tmp_path, monkeypatch, key, value, message):
    # The URLs stay the real (unreachable) S3 ones: the check must come before any request.
    with pytest.raises(SystemExit) as info:
        run(tmp_path, monkeypatch, {key: value})
    text = str(info.value.code)
    assert text.startswith(message) and "\n" not in text
    assert not (tmp_path / "data" / "raw" / "train.csv").exists()
