"""The image downloader against a local server that injects the internet's faults."""
from __future__ import annotations

import base64
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pandas as pd
import pytest
import urllib3
from PIL import Image

from landmarks.download import download_images, prune_images
from landmarks.gldv2 import image_path
from landmarks.http import Client, backoff_delay, parse_retry_after, release
from landmarks.imageio import decode_image
from stages.common import ConfigError
from tests.conftest import download_params
from tests.faultserver import HTML_PAGE, Cut, Drip, FaultServer, Redirect, Reset, Respond, Stall, huge_png, make_jpeg
from tests.test_gldv2 import run_stage_main

REPO = Path(__file__).resolve().parents[1]
# Tiny timeouts and backoff keep the whole file fast; the logic is the same at real scale.
FAST = dict(workers=8, image_size=64, connect_timeout=2.0, read_timeout=0.5, max_retries=2,
            backoff=0.01, max_backoff=0.2, max_bytes=1_000_000)
JPEG = make_jpeg(160, 120, seed=1)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:016x}" for i in range(start, start + n)]


@pytest.fixture()
def server():
    with FaultServer() as s:
        yield s


def run(rows: list[tuple[str, str, int]], images: Path, **cfg) -> tuple:
    df = pd.DataFrame(rows, columns=["id", "url", "landmark_id"])
    settings = {**FAST, **cfg}
    extra = {k: settings.pop(k) for k in ("allowed_schemes", "max_backoff") if k in settings}
    result = download_images(df, images, download_params(**settings), progress=False, **extra)
    reasons = dict(zip(result.failures["id"], result.failures["reason"]))
    return result, reasons


def test_each_fault_ends_as_an_image_or_a_failure_with_its_reason(server, tmp_path):
    local = tmp_path / "local.jpg"
    local.write_bytes(JPEG)
    cases = {  # path: (actions, expected reason or None for a stored image)
        "/ok.jpg": ([Respond(body=JPEG)], None),
        "/404.jpg": ([Respond(404, b"gone", "text/html")], "http_404"),
        "/500-then-ok.jpg": ([Respond(500), Respond(body=JPEG)], None),
        "/500.jpg": ([Respond(503)], "http_503"),
        "/429-then-ok.jpg": ([Respond(429, headers={"Retry-After": "0"}), Respond(body=JPEG)], None),
        "/stall.jpg": ([Stall(5.0, JPEG)], "timeout"),
        "/reset.jpg": ([Reset()], "connection_error"),
        "/reset-then-ok.jpg": ([Reset(), Respond(body=JPEG)], None),
        "/cut-then-ok.jpg": ([Cut(JPEG, at=len(JPEG) // 3), Respond(body=JPEG, ranges=False)], None),
        "/truncated.jpg": ([Respond(body=JPEG[: len(JPEG) // 2])], "corrupt"),
        "/html.jpg": ([Respond(body=HTML_PAGE, content_type="image/jpeg")], "not_an_image"),
        "/empty.jpg": ([Respond(body=b"")], "empty_file"),
        "/bomb.png": ([Respond(body=huge_png(), content_type="image/png")], "too_large"),
        "/loop.jpg": ([Redirect("/loop.jpg")], "too_many_redirects"),
        "/to-file.jpg": ([Redirect(local.as_uri())], "bad_redirect_scheme"),
        "/to-ftp.jpg": ([Redirect("ftp://127.0.0.1/x.jpg")], "bad_redirect_scheme"),
        "/hop1.jpg": ([Redirect("/hop2.jpg")], None),
        "/hop2.jpg": ([Redirect("/ok.jpg")], None),
        "/big.jpg": ([Respond(body=b"\xff\xd8" + b"\0" * 1_500_000)], "max_bytes_exceeded"),
        "/big-no-length.jpg": ([Respond(body=b"\xff\xd8" + b"\0" * 1_500_000, send_length=False)], "max_bytes_exceeded"),
    }
    rows = []
    for n, (path, (actions, _)) in enumerate(cases.items()):
        server.route(path, *actions)
        if path != "/hop2.jpg":  # only reached through /hop1.jpg
            rows.append((f"{n:016x}", server.url(path), n % 3))
    extra = {  # rows that must fail before any request
        "bad id": (("NOT-A-HEX-ID-000", server.url("/ok.jpg"), 0), "invalid_id"),
        "path traversal": (("../../etc/passwd", server.url("/ok.jpg"), 0), "invalid_id"),
        "file in gldv2": (("f" * 16, local.as_uri(), 0), "disallowed_scheme"),
        "ftp": (("e" * 16, "ftp://example.org/a.jpg", 0), "disallowed_scheme"),
        "bad landmark": (("d" * 16, server.url("/ok.jpg"), "x"), "invalid_landmark_id"),
        "duplicate": ((rows[0][0], server.url("/ok.jpg?again"), rows[0][2]), "duplicate_id"),
        "no host": (("c" * 16, "http://", 0), "invalid_url"),
        "bad ipv6": (("b" * 16, "http://[::1/a.jpg", 0), "invalid_url"),
        "space in host": (("a" * 16, "http://exa mple.org/a.jpg", 0), "invalid_url"),
        "empty url": (("9" * 16, "", 0), "invalid_url"),
    }
    rows += [row for row, _ in extra.values()]
    images = tmp_path / "images"

    result, _ = run(rows, images)

    f = result.failures
    reasons = dict(zip(zip(f["id"], f["url"]), f["reason"]))
    for n, (path, (_, expected)) in enumerate(cases.items()):
        if path == "/hop2.jpg":
            continue
        image_id = f"{n:016x}"
        assert reasons.get((image_id, server.url(path))) == expected, path
        assert image_path(images, n % 3, image_id).is_file() == (expected is None), path
    for name, ((image_id, url, _), expected) in extra.items():
        assert reasons[(image_id, url)] == expected, name
    assert len(result.failures) + result.downloaded == len(rows)  # nothing lost
    assert result.failures.columns.tolist() == ["id", "url", "landmark_id", "reason"]
    # Retryable faults are retried exactly max_retries times; permanent ones never.
    assert server.count("/500.jpg") == FAST["max_retries"] + 1
    assert server.count("/stall.jpg") == FAST["max_retries"] + 1
    assert server.count("/500-then-ok.jpg") == 2
    assert server.count("/404.jpg") == 1
    assert server.count("/html.jpg") == 1
    assert server.count("/loop.jpg") == 6  # the first request and 5 redirects


def test_stored_images_are_resized_valid_jpegs(server, tmp_path):
    url = server.route("/big.jpg", Respond(body=make_jpeg(400, 300, seed=2)))
    result, reasons = run([("a" * 16, url, 7)], tmp_path, image_size=64)
    assert reasons == {} and result.downloaded == 1
    with Image.open(image_path(tmp_path, 7, "a" * 16)) as img:
        assert img.format == "JPEG" and min(img.size) == 64 and img.size == (85, 64)


def test_pixel_limit_rejects_a_decompression_bomb_without_allocating_it():
    code = ("import resource, sys; from landmarks.imageio import decode_image, ImageError; "
            "from tests.faultserver import huge_png; data = huge_png(); "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    decode_image(data, max_pixels=178956970)\nexcept ImageError as e:\n    print(e.reason)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    reason, grown_mb = out.stdout.split()
    assert reason == "too_large"
    assert int(grown_mb) < 50  # decoding would need 400 MB (1 bit/pixel unpacked to 8)


def test_max_pixels_param_is_applied(server, tmp_path):
    url = server.route("/a.jpg", Respond(body=make_jpeg(200, 100)))
    _, reasons = run([("a" * 16, url, 0)], tmp_path, max_pixels=200 * 100 - 1)
    assert reasons == {"a" * 16: "too_large"}


def test_retry_after_is_honoured(server, tmp_path):
    url = server.route("/a.jpg", Respond(429, headers={"Retry-After": "1"}), Respond(body=JPEG))
    start = time.monotonic()
    _, reasons = run([("a" * 16, url, 0)], tmp_path, max_backoff=5.0)
    assert reasons == {} and server.count("/a.jpg") == 2
    assert time.monotonic() - start >= 0.95  # our own backoff (0.01 s) would have retried at once


def test_retry_after_is_capped(server, tmp_path):
    url = server.route("/a.jpg", Respond(429, headers={"Retry-After": "3600"}), Respond(body=JPEG))
    start = time.monotonic()
    _, reasons = run([("a" * 16, url, 0)], tmp_path, max_backoff=0.2)
    assert reasons == {} and time.monotonic() - start < 5


def test_a_dripping_body_fails_at_the_deadline_while_the_other_rows_download(server, tmp_path):
    deadline = 3.0
    # 16 bytes a second after a valid JPEG's first bytes: minutes for the whole image, and each
    # read returns long before read_timeout, so only the deadline can end it.
    drip = server.route("/drip.jpg", Drip(JPEG, head=600, step=4, interval=0.25))
    # The same, then silence: the last read would wait read_timeout (20 s), or the time left at
    # the request (3 s), unless the read timeout is lowered to the time left as it shrinks.
    hang = server.route("/drip-then-hang.jpg", Drip(JPEG, head=600, step=4, interval=0.25, silent_after=deadline - 0.25))
    ok = [(i, server.route(f"/{i}.jpg", Respond(body=JPEG)), 1) for i in ids(6, 100)]
    start = time.monotonic()
    result, reasons = run([("a" * 16, drip, 0), ("b" * 16, hang, 0), *ok], tmp_path, workers=4,
                          read_timeout=20.0, max_retries=3, deadline=deadline)
    elapsed = time.monotonic() - start
    assert reasons == {"a" * 16: "timeout", "b" * 16: "timeout"}
    assert result.downloaded == len(ok)
    # Without a deadline: minutes; with a deadline checked only between chunks: ~5.5 s.
    assert elapsed < deadline + 1.5
    assert server.count("/drip.jpg") == server.count("/drip-then-hang.jpg") == 1  # no retry once time is up


def test_retries_and_their_waits_count_against_the_deadline(server, tmp_path):
    url = server.route("/busy.jpg", Respond(503, headers={"Retry-After": "1"}))
    start = time.monotonic()
    _, reasons = run([("a" * 16, url, 0)], tmp_path, max_retries=10, max_backoff=5.0, deadline=2.5)
    elapsed = time.monotonic() - start
    assert reasons == {"a" * 16: "timeout"}
    # 10 retries would take 10 s; a wait that would end past the deadline is not begun.
    assert 1.0 <= elapsed < 2.5 + 1.5
    assert 2 <= server.count("/busy.jpg") <= 3

    # A wait that would end past the deadline is not begun: the row fails at once, not in 4 s.
    url = server.route("/later.jpg", Respond(503, headers={"Retry-After": "4"}))
    start = time.monotonic()
    _, reasons = run([("b" * 16, url, 0)], tmp_path, max_retries=10, max_backoff=5.0, deadline=2.5)
    assert reasons == {"b" * 16: "timeout"} and time.monotonic() - start < 1.5


def test_retry_after_parses_seconds_and_http_dates():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(8)]
    for attempt, delay in enumerate(delays):
        full = min(60.0, 2.0**attempt)
        assert full / 2 <= delay <= full
    assert len({round(backoff_delay(3, 1.0, 60.0, rng), 6) for _ in range(20)}) > 1  # jittered


def test_user_agent_from_params_is_sent(server, tmp_path):
    url = server.route("/a.jpg", Respond(body=JPEG))
    run([("a" * 16, url, 0)], tmp_path, user_agent="test-agent/1.0 (me@example.com)")
    assert server.requests[0][1]["User-Agent"] == "test-agent/1.0 (me@example.com)"


def test_exactly_workers_requests_are_in_flight_at_once(tmp_path):
    with FaultServer(latency=0.5) as server:
        rows = [(i, server.route(f"/{i}.jpg", Respond(body=JPEG)), 0) for i in ids(40)]
        start = time.monotonic()
        result, _ = run(rows, tmp_path, workers=32, read_timeout=5.0)
        assert result.downloaded == 40
        # The threads beyond the workers only decode and store: they never add a request.
        assert server.max_active == 32
        assert time.monotonic() - start < 3  # sequentially: 40 x 0.5 s = 20 s
    assert Client(pool_size=64).pool_size >= 64  # a keep-alive connection for every thread


def test_requests_take_the_environments_proxy_unless_no_proxy_names_the_host(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url = "http://photos.invalid/a.jpg"  # .invalid never resolves: only a proxy can answer
    with FaultServer() as proxy:
        proxy.route(url, Respond(body=JPEG))  # a proxy is asked for the whole URL
        monkeypatch.setenv("HTTP_PROXY", proxy.url("").replace("http://", "http://me:p%40ss@"))
        resp = Client().get(url, timeout=(2.0, 2.0))
        assert resp.status == 200 and resp.read() == JPEG
        release(resp)
        headers = {k.lower(): v for k, v in proxy.requests[0][1].items()}
        assert headers["user-agent"].startswith("landmarks-pipeline/")
        assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"me:p@ss").decode()
        monkeypatch.setenv("NO_PROXY", "photos.invalid")
        with pytest.raises(urllib3.exceptions.NewConnectionError):
            Client().get(url, timeout=(2.0, 2.0))
        assert len(proxy.requests) == 1


def test_file_urls_go_through_the_same_validation(tmp_path):
    good = tmp_path / "good photo.jpg"
    good.write_bytes(make_jpeg(300, 200))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    rows = [("a" * 16, good.as_uri(), 1), ("b" * 16, bad.as_uri(), 1), ("c" * 16, (tmp_path / "gone.jpg").as_uri(), 1)]
    result, reasons = run(rows, tmp_path / "images", allowed_schemes=("http", "https", "file"))
    assert reasons == {"b" * 16: "not_an_image", "c" * 16: "file_not_found"}
    assert min(decode_image(image_path(tmp_path / "images", 1, "a" * 16)).size) == 64


def test_distractors_are_stored_under_no_landmark_and_counted_apart(server, tmp_path):
    local = tmp_path / "scene.jpg"
    local.write_bytes(make_jpeg(200, 100, seed=3))
    url = server.route("/ok.jpg", Respond(body=JPEG))
    rows = [
        ("a" * 16, url, 5), ("b" * 16, url, 5),
        ("c" * 16, local.as_uri(), -1),  # a distractor from fetch_csv's own list: file:// is fine even for gldv2
        ("d" * 16, url, "-1"),  # read as text by the stage
        ("e" * 16, (tmp_path / "gone.jpg").as_uri(), -1),  # fails like any other row
        ("f" * 16, local.as_uri(), 5),  # a landmark row may not read local files
        ("a" * 16, local.as_uri(), -1),  # the same id as a landmark photo, in another folder: not a duplicate
        ("9" * 16, url, -2),  # no other negative landmark id is valid
    ]
    images = tmp_path / "images"
    result, reasons = run(rows, images)  # allowed_schemes: the web only, as for gldv2
    assert reasons == {"e" * 16: "file_not_found", "f" * 16: "disallowed_scheme", "9" * 16: "invalid_landmark_id"}
    for image_id in ("c" * 16, "d" * 16, "a" * 16):
        path = images / "no_landmark" / f"{image_id}.jpg"
        assert path.is_file() and path == image_path(images, -1, image_id)
        assert min(decode_image(path).size) == 64  # resized like the landmark photos
    assert (images / "5" / f"{'a' * 16}.jpg").is_file()
    assert result.distractors == 3
    assert result.images_per_class == {5: 2}  # distractors are not a class
    assert sorted(p.name for p in images.iterdir()) == ["5", "no_landmark"]

    # a rerun keeps them, and prunes a distractor that is no longer selected
    result, reasons = run(rows[:3] + rows[4:], images)
    assert result.already_present == 4 and result.downloaded == 0 and result.distractors == 2
    assert not (images / "no_landmark" / f"{'d' * 16}.jpg").exists()


def test_existing_images_are_kept_and_stale_files_removed(server, tmp_path):
    images = tmp_path / "images"
    url_a = server.route("/a.jpg", Respond(body=JPEG))
    url_b = server.route("/b.jpg", Respond(body=JPEG))
    kept = image_path(images, 1, "a" * 16)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(make_jpeg(64, 64))
    stale_class = image_path(images, 9, "c" * 16)
    stale_class.parent.mkdir(parents=True)
    stale_class.write_bytes(JPEG)
    leftover_tmp = images / "1" / f".{'b' * 16}.jpg.x1y2.tmp"
    leftover_tmp.write_bytes(JPEG[:100])

    result, reasons = run([("a" * 16, url_a, 1), ("b" * 16, url_b, 1)], images)

    assert reasons == {} and result.already_present == 1 and result.downloaded == 1 and result.removed == 2
    assert server.count("/a.jpg") == 0  # present: never requested again
    assert not stale_class.exists() and not stale_class.parent.exists() and not leftover_tmp.exists()
    assert sorted(p.name for p in images.rglob("*") if p.is_file()) == [f"{'a' * 16}.jpg", f"{'b' * 16}.jpg"]


def test_prune_images_on_a_missing_folder_is_a_no_op(tmp_path):
    assert prune_images(tmp_path / "nothing", set()) == 0


@pytest.mark.parametrize("key,value", [
    ("workers", 0), ("workers", 2.5), ("processes", 0), ("processes", "all"), ("image_size", -1), ("connect_timeout", 0), ("read_timeout", "fast"),
    ("max_retries", -1), ("backoff", -1.0), ("max_bytes", 0), ("max_pixels", True), ("user_agent", ""),
    ("deadline", 0), ("deadline", 86401), ("deadline", "3 min"), ("deadline", float("inf")),
])
def test_invalid_download_params_fail_fast_with_a_one_line_message(key, value):
    with pytest.raises(ValueError) as err:
        download_params(**{key: value})
    message = str(err.value)
    assert f"download.{key}={value!r}" in message and "\n" not in message


def test_unknown_download_param_is_rejected():
    with pytest.raises(ValueError, match="download.worker is not a known setting"):
        download_params(worker=4)


# ---------------------------------------------------------------------------------------------
# The stage


def write_rows(tmp_path: Path, rows: list[tuple]) -> None:
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(tmp_path / "selected.csv", index=False)


def run_stage(tmp_path: Path, monkeypatch, rows: list[tuple], dataset: str = "gldv2", **download) -> dict:
    write_rows(tmp_path, rows)
    run_stage_main("download", ["--selected", "selected.csv", "--images", "images", "--failures", "failures.csv",
                                "--report", "report.json"], tmp_path, monkeypatch,
                   {"dataset": dataset, "download": {k: v for k, v in {**FAST, **download}.items() if k != "max_backoff"}})
    return json.loads((tmp_path / "report.json").read_text())


def test_stage_writes_failures_csv_and_report(server, tmp_path, monkeypatch):
    ok = server.route("/ok.jpg", Respond(body=JPEG))
    missing = server.route("/missing.jpg", Respond(404))
    rows = [("a" * 16, ok, 1), ("b" * 16, ok, 1), ("c" * 16, missing, 2), ("d" * 16, ok, 2), ("bad", ok, 2)]

    report = run_stage(tmp_path, monkeypatch, rows)

    failures = pd.read_csv(tmp_path / "failures.csv", dtype=str)
    assert failures.columns.tolist() == ["id", "url", "landmark_id", "reason"]
    assert failures["reason"].tolist() == ["http_404", "invalid_id"]
    assert report["selected"] == 5 and report["downloaded"] == 3 and report["already_present"] == 0
    assert report["failed"] == 2 and report["failures_by_reason"] == {"http_404": 1, "invalid_id": 1}
    assert report["images_per_class"] == {"min": 1, "median": 1.5, "max": 2}  # split decides what is too few
    assert report["classes_without_images"] == []

    report = run_stage(tmp_path, monkeypatch, rows)  # a rerun only retries the failures
    assert report["already_present"] == 3 and report["downloaded"] == 0 and server.count("/ok.jpg") == 3


def test_stage_exits_non_zero_when_every_row_fails(server, tmp_path, monkeypatch):
    url = server.route("/missing.jpg", Respond(404))
    with pytest.raises(SystemExit, match="all 2 selected images failed"):
        run_stage(tmp_path, monkeypatch, [("a" * 16, url, 1), ("b" * 16, url, 1)])
    assert (tmp_path / "failures.csv").is_file()  # the evidence is written before exiting


def test_stage_rejects_bad_params_with_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^error: download.workers=0 is not valid"):
        run_stage(tmp_path, monkeypatch, [("a" * 16, "http://127.0.0.1:9/a.jpg", 1)], workers=0)


def test_stage_reports_distractors_apart_from_the_classes(server, tmp_path, monkeypatch):
    ok = server.route("/ok.jpg", Respond(body=JPEG))
    scene = tmp_path / "scene.jpg"
    scene.write_bytes(JPEG)
    rows = [("a" * 16, ok, 1), ("b" * 16, ok, 1), ("c" * 16, scene.as_uri(), -1)]
    report = run_stage(tmp_path, monkeypatch, rows)  # gldv2: the web only, but the distractor list is local
    assert report["downloaded"] == 3 and report["distractors"] == 1 and report["failed"] == 0
    assert report["images_per_class"] == {"min": 2, "median": 2.0, "max": 2}  # the distractor is not a class
    assert [p.name for p in (tmp_path / "images" / "no_landmark").iterdir()] == ["c" * 16 + ".jpg"]


def test_stage_allows_file_urls_only_for_local_datasets(tmp_path, monkeypatch):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(JPEG)
    rows = [("a" * 16, photo.as_uri(), 0), ("b" * 16, photo.as_uri(), 0)]
    assert run_stage(tmp_path, monkeypatch, rows, dataset="folder")["downloaded"] == 2
    with pytest.raises(SystemExit, match="all 2 selected images failed"):
        run_stage(tmp_path, monkeypatch, rows)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failures_by_reason"] == {"disallowed_scheme": 2}
    assert not any((tmp_path / "images").rglob("*.jpg"))  # the now-unselected images were pruned
