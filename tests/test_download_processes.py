"""The downloader over worker processes gives what it gives in one process: the same stored bytes,
the same failure rows in the same order, the same counts; and it fails loudly when a worker does."""
from __future__ import annotations

import errno
import multiprocessing
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

import landmarks.download
import landmarks.workers
from landmarks.gldv2 import image_path
from landmarks.imageio import decode_image
from tests.faultserver import HTML_PAGE, FaultServer, Redirect, Reset, Respond, make_jpeg
from tests.test_download import run

JPEGS = [make_jpeg(90 + 7 * i, 60 + 5 * i, seed=i) for i in range(8)]


def fault_rows(server: FaultServer, local: Path) -> list[tuple]:
    """Every kind of outcome, spread through many good rows so that each process gets some of each."""
    faults = [
        [Respond(404)], [Respond(503)], [Respond(500), Respond(body=JPEGS[1])],
        [Respond(429, headers={"Retry-After": "0"}), Respond(body=JPEGS[2])], [Reset(), Respond(body=JPEGS[3])],
        [Reset()], [Respond(body=JPEGS[4][: len(JPEGS[4]) // 2])], [Respond(body=HTML_PAGE, content_type="image/jpeg")],
        [Respond(body=b"")], [Redirect(local.as_uri())], [Redirect("/ok/0.jpg")],
    ]
    rows = []
    for n in range(120):
        fault = n % 10 == 3 and n // 10 < len(faults)
        actions = faults[n // 10] if fault else [Respond(body=JPEGS[n % len(JPEGS)])]
        rows.append((f"{n:016x}", server.route(f"/{'f' if fault else 'ok'}/{n}.jpg", *actions), n % 4))
    rows += [("not-an-id", server.url("/ok/0.jpg"), 1), (rows[5][0], server.url("/ok/9.jpg"), rows[5][2]),
             ("e" * 16, local.as_uri(), -1), ("f" * 16, (local.parent / "gone.jpg").as_uri(), -1),
             ("d" * 16, local.as_uri(), 2)]
    return rows


def download(rows_of, tmp: Path, processes: int | str, monkeypatch) -> tuple:
    """Download `rows_of(server, local file)` with `processes`: the result, its failures made comparable
    between runs, the stored files, and the process counts that run_in_processes was asked for."""
    local = tmp / "local.jpg"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(JPEGS[5])
    used = []
    real = landmarks.workers.run_in_processes
    monkeypatch.setattr(landmarks.download, "run_in_processes",
                        lambda *a, **kw: used.append(kw["processes"]) or real(*a, **kw))
    with FaultServer() as server:
        result, _ = run(rows_of(server, local), tmp / "images", processes=processes)
        # Comparable between runs: each has its own server port and folder.
        failures = result.failures.assign(url=[u.replace(server.url("/"), "SERVER/").replace(str(tmp), "TMP")
                                               for u in result.failures["url"]])
    stored = {str(p.relative_to(tmp / "images")): p.read_bytes() for p in (tmp / "images").rglob("*") if p.is_file()}
    return result, failures, stored, used


def test_worker_processes_store_the_same_bytes_and_fail_the_same_rows(tmp_path, monkeypatch):
    one, one_failures, one_stored, used_one = download(fault_rows, tmp_path / "one", 1, monkeypatch)
    three, three_failures, three_stored, used_three = download(fault_rows, tmp_path / "three", 3, monkeypatch)

    assert used_one == [] and used_three == [3]
    assert one_stored == three_stored and len(one_stored) == one.downloaded
    pd.testing.assert_frame_equal(one_failures, three_failures)  # same rows, same reasons, same order
    assert three_failures["reason"].tolist() == [
        "http_404", "http_503", "connection_error", "corrupt", "not_an_image", "empty_file", "bad_redirect_scheme",
        "invalid_id", "duplicate_id", "file_not_found", "disallowed_scheme"]
    for field in ("selected", "downloaded", "already_present", "removed", "images_per_class", "distractors"):
        assert getattr(one, field) == getattr(three, field), field
    assert three.downloaded == 125 - 11 and three.distractors == 1
    assert not multiprocessing.active_children()


def test_one_usable_core_downloads_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr("landmarks.workers.usable_cores", lambda: 1)
    result, _, stored, used = download(fault_rows, tmp_path, "auto", monkeypatch)
    assert used == [] and len(stored) == result.downloaded == 114


def good_rows(server: FaultServer, local: Path) -> list[tuple]:
    return [(f"{n:016x}", server.route(f"/{n}.jpg", Respond(body=JPEGS[n % len(JPEGS)])), 0) for n in range(60)]


def test_an_error_writing_an_image_stops_the_run_as_in_one_process(tmp_path, monkeypatch):
    real = landmarks.download.atomic_write_bytes

    def write(path, data):
        if path.name == f"{41:016x}.jpg":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(landmarks.download, "atomic_write_bytes", write)  # inherited by the forked workers
    with pytest.raises(OSError, match="No space left on device"):
        download(good_rows, tmp_path, 2, monkeypatch)
    assert not multiprocessing.active_children()


def test_a_worker_that_dies_stops_the_run_and_leaves_only_whole_images(tmp_path, monkeypatch):
    real = landmarks.download.download_one

    def download_one(session, url, target, *args):
        if target.name == f"{30:016x}.jpg":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(session, url, target, *args)

    monkeypatch.setattr(landmarks.download, "download_one", download_one)
    with pytest.raises(RuntimeError, match=r"worker process worker-\d \(pid \d+\) was killed by signal 9"):
        download(good_rows, tmp_path, 2, monkeypatch)
    assert not multiprocessing.active_children()
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    for p in files:  # a write killed midway leaves a temp file at most, never a partial image
        assert p.name.endswith(".tmp") or decode_image(p)
    assert not image_path(tmp_path / "images", 0, f"{30:016x}").exists()
