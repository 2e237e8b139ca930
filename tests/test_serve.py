"""`landmarks serve`: the routes, the limits, batching across requests, a load test and the page in a real browser.

Servers listen on 127.0.0.1 only. Most run in this process (a uvicorn thread) so that a test can wrap the
predictor; the load test runs the real `landmarks serve` command.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
import uvicorn

from landmarks.cli import build_parser, main
from landmarks.predictor_file import load_predictor
from landmarks.serve import create_app
from landmarks.service import ServeOptions
from tests.serve_client import cli_server, load
from tests.test_cli import BAD, GOOD, model, pattern, photos, write_predictor  # noqa: F401 (fixtures)
from tests.test_export import one_thread  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch\\.jit.* is deprecated:FutureWarning")

# The issue asks for 20 s of 32 clients; the suite runs 5 s of it, bench/bench_serve.py the full 20 s.
LOAD_SECONDS = 5
FLOATS = ("confidence", "score")
TOO_LARGE = b"HTTP/1.1 413 Request Entity Too Large"


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` from a uvicorn thread on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Counting:
    """The predictor, recording the size of every forward pass, optionally slowed down like a real model."""

    def __init__(self, predictor: Any, delay: float = 0.0) -> None:
        self.predictor, self.delay, self.batches = predictor, delay, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def __call__(self, batch: Any) -> Any:
        self.batches.append(len(batch))
        time.sleep(self.delay)
        return self.predictor(batch)


def post(url: str, *named: tuple[str, bytes], timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/tag", files=[("files", (name, data)) for name, data in named], timeout=timeout)


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    pattern(width, height, seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def same_rows(served: list[dict[str, Any]], printed: list[dict[str, Any]]) -> None:
    """The service's rows are `tag --json`'s: same keys and values, floats to the CLI's 6 decimals (batches of
    other sizes may move the last digit), and errors with the same reason (the CLI's message names the path)."""
    assert len(served) == len(printed)
    for s, p in zip(served, printed):
        assert list(s) == list(p), s["path"]
        plain = [k for k in p if k not in (*FLOATS, "top5", "error")]
        assert {k: s[k] for k in plain} == {k: p[k] for k in plain}, s["path"]
        for k in FLOATS:
            assert (s[k] is None) == (p[k] is None) and (s[k] is None or abs(s[k] - p[k]) <= 2e-6), (s["path"], k)
        assert (s["error"] or "").split(":")[0] == (p["error"] or "").split(":")[0], s["path"]
        if p["top5"] is None:
            assert s["top5"] is None
        else:
            assert [t["landmark_id"] for t in s["top5"]] == [t["landmark_id"] for t in p["top5"]]
            np.testing.assert_allclose([t["probability"] for t in s["top5"]], [t["probability"] for t in p["top5"]], atol=2e-6)


@pytest.fixture(scope="module")
def predictor(model: Path) -> Any:  # noqa: F811 (the fixture imported above)
    return load_predictor(model)


@pytest.fixture(scope="module")
def url(predictor: Any) -> Iterator[str]:
    """A service with the default options, for the tests that need nothing special."""
    with running(create_app(predictor)) as base:
        yield base


# ----------------------------------------------------------------------------- routes


def test_health_reports_the_model(url: str, predictor: Any) -> None:
    r = requests.get(f"{url}/health", timeout=30)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "classes": len(predictor.classes), "threshold": predictor.threshold}


def test_the_page_is_served_and_loads_nothing_from_elsewhere(url: str) -> None:
    r = requests.get(f"{url}/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="files"' in r.text and "/tag" in r.text and "/health" in r.text
    assert "http" not in r.text.replace("http-equiv", "")  # no CDN, no absolute URL: only this server is reachable


def test_tag_answers_exactly_what_tag_json_prints(url: str, photos: Path, model: Path,  # noqa: F811
                                                  capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [n for n in [*GOOD, *BAD] if "/" not in n]  # an upload's path is its file name
    r = post(url, *[(n, (photos / n).read_bytes()) for n in names])
    assert r.status_code == 200
    served = r.json()
    monkeypatch.chdir(photos)
    assert main(["tag", *names, "--json", "--model", str(model)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert [row["path"] for row in printed] == names
    same_rows(served, printed)
    by_name = {row["path"]: row for row in served}
    assert all(by_name[n]["status"] == "ok" and len(by_name[n]["top5"]) == 3 for n in names if n in GOOD)
    assert {n: by_name[n]["error"].split(":")[0] for n in BAD} == BAD  # empty, truncated, not an image, bomb, strip
    assert by_name["fake.jpg"]["error"] == "not_an_image: cannot identify image file"  # no BytesIO address


def test_requests_without_files_are_a_400(url: str) -> None:
    assert requests.post(f"{url}/tag", timeout=30).status_code == 400
    assert requests.post(f"{url}/tag", json={"files": ["a.jpg"]}, timeout=30).status_code == 400
    r = requests.post(f"{url}/tag", files={"photo": ("a.jpg", jpeg(40, 30))}, timeout=30)  # wrong field name
    assert r.status_code == 400 and "files" in r.json()["detail"]
    r = requests.post(f"{url}/tag", data={"files": "a.jpg"}, files={"x": ("x", b"")}, timeout=30)  # text, not a file
    assert r.status_code == 400 and "file upload" in r.json()["detail"]
    too_many = ServeOptions().max_queue + 1
    assert post(url, *[(f"{i}.jpg", b"x") for i in range(too_many)]).status_code == 400


def raw_request(url: str, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request by hand and return the status line; the body may be left unfinished on purpose."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head)
        for chunk in body_chunks:
            s.sendall(chunk)
        return s.recv(4096).split(b"\r\n")[0]


def test_a_body_over_the_limit_is_a_413_before_it_is_all_read(predictor: Any) -> None:
    with running(create_app(predictor, ServeOptions(max_body_mb=1))) as base:
        big = jpeg(40, 30) + b"\0" * (2 * 1024 * 1024)
        r = post(base, ("big.jpg", big))
        assert r.status_code == 413
        assert post(base, ("small.jpg", jpeg(40, 30))).status_code == 200
        form = b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
        # A Content-Length over the limit is refused with no body sent at all.
        head = b"POST /tag HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\n"
        assert raw_request(base, head + b"Content-Length: 99999999999\r\n\r\n", iter([])) == TOO_LARGE
        # A chunked body is refused once 1 MiB has arrived, though it never ends: a server that buffered the
        # whole body before checking would still be waiting (and this would time out).
        chunks = (b"%x\r\n%s\r\n" % (len(c), c) for c in [form, *[b"\xff" * 65536] * 20])
        assert raw_request(base, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks) == TOO_LARGE
        assert requests.get(f"{base}/health", timeout=30).status_code == 200


def test_a_client_that_leaves_mid_upload_leaves_no_traceback(url: str) -> None:
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(b"POST /tag HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                      b'Content-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; name="files"; '
                      b'filename="a.jpg"\r\n\r\n' + b"\xff" * 30000)
        time.sleep(0.5)
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert [r.getMessage() for r in errors] == []


def test_photos_decoding_past_the_pixel_budget_are_a_413(predictor: Any) -> None:
    options = ServeOptions(max_pixels=10_000, max_queue_pixels=10_000)
    with running(create_app(predictor, options)) as base:
        one = jpeg(100, 80)  # 8,000 pixels: fits alone, not twice
        assert post(base, ("a.jpg", one)).status_code == 200
        r = post(base, ("a.jpg", one), ("b.jpg", one))
        assert r.status_code == 413 and "fewer" in r.json()["detail"]
        rows = post(base, ("big.jpg", jpeg(200, 100))).json()  # over max_pixels: decode_image refuses it, per file
        assert rows[0]["status"] == "error" and rows[0]["error"].startswith("too_large")


# ----------------------------------------------------------------------------- concurrency


def concurrently(n: int, fn: Any) -> list[Any]:
    """Run fn(i) for i < n in n threads released at the same moment; the results in order."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_requests_share_forward_passes(predictor: Any) -> None:
    photo = jpeg(64, 48)
    counting = Counting(predictor, delay=0.05)
    with running(create_app(counting, ServeOptions(max_batch=8, max_wait_ms=500))) as base:
        alone = post(base, ("p.jpg", photo)).json()[0]
        assert counting.batches == [1]
        responses = concurrently(16, lambda i: post(base, (f"p{i}.jpg", photo)))
    assert [r.status_code for r in responses] == [200] * 16
    rows = [r.json()[0] for r in responses]
    assert [row["path"] for row in rows] == [f"p{i}.jpg" for i in range(16)]
    assert all(row["landmark_id"] == alone["landmark_id"] and abs(row["score"] - alone["score"]) <= 2e-6 for row in rows)
    batches = counting.batches[1:]
    assert sum(batches) == 16 and max(batches) <= 8
    assert len(batches) <= 4, f"16 concurrent requests took {len(batches)} forward passes: {batches}"


def test_sequential_requests_do_not_wait_for_partners_for_long(predictor: Any) -> None:
    counting = Counting(predictor)
    with running(create_app(counting, ServeOptions(max_wait_ms=10))) as base:
        for i in range(3):
            start = time.monotonic()
            assert post(base, (f"p{i}.jpg", jpeg(64, 48))).status_code == 200
            assert time.monotonic() - start < 5
    assert counting.batches == [1, 1, 1]  # nothing to share a pass with, so each ran alone


def test_the_event_loop_answers_while_inference_runs(predictor: Any) -> None:
    slow = Counting(predictor, delay=3.0)
    with running(create_app(slow)) as base:
        tagging = threading.Thread(target=post, args=(base, ("p.jpg", jpeg(64, 48))))
        tagging.start()
        deadline = time.monotonic() + 10
        while not slow.batches and time.monotonic() < deadline:  # until the forward pass has begun
            time.sleep(0.01)
        assert slow.batches, "the slow forward pass never started"
        start = time.monotonic()
        assert requests.get(f"{base}/health", timeout=2).status_code == 200
        assert time.monotonic() - start < 1.0
        tagging.join(30)


def test_a_full_queue_answers_503_with_retry_after_and_recovers(predictor: Any) -> None:
    slow = Counting(predictor, delay=0.4)
    with running(create_app(slow, ServeOptions(max_queue=2, max_batch=1, max_wait_ms=0))) as base:
        responses = concurrently(8, lambda i: post(base, (f"p{i}.jpg", jpeg(64, 48))))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 503)
        assert sum(slow.batches) == codes.count(200)  # refused requests were never decoded or run
        # the budget is given back: once the queue drains, a request that fills it is admitted
        assert post(base, ("a.jpg", jpeg(64, 48)), ("b.jpg", jpeg(64, 48))).status_code == 200


def test_32_clients_for_a_while_get_no_error_from_the_command(model: Path, tmp_path: Path) -> None:  # noqa: F811
    photos_ = [(f"p{i}.jpg", jpeg(320, 240, seed=i)) for i in range(4)]
    with cli_server(model, tmp_path / "serve.log", "--threads", "1") as base:
        health = requests.get(f"{base}/health", timeout=30).json()
        assert health["status"] == "ok" and health["classes"] == 3
        result = load(base, photos_, clients=32, seconds=LOAD_SECONDS)
    assert result.errors == {}
    assert result.photos >= 32, result  # every client was answered at least once


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_the_command_serves_every_predictor_format_tag_loads(suffix: str, photos: Path, tmp_path: Path,  # noqa: F811
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_predictor(tmp_path / f"predictor{suffix}", -1.0)
    names = ["good.jpg", "gray.png", "rotated.jpg", "fake.jpg"]
    with cli_server(path, tmp_path / "serve.log", "--threads", "1") as base:
        assert requests.get(f"{base}/health", timeout=30).json()["classes"] == 3
        served = post(base, *[(n, (photos / n).read_bytes()) for n in names]).json()
    monkeypatch.chdir(photos)
    assert main(["tag", *names, "--json", "--model", str(path)]) == 1
    same_rows(served, json.loads(capsys.readouterr().out))
    assert [row["status"] for row in served] == ["ok", "ok", "ok", "error"]


def test_serve_options_and_their_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    # no --model: the CLI's default files (models/predictor.pt2, else .pt), found as `landmarks tag` finds them
    assert (args.host, args.port, args.model, args.max_body_mb) == ("127.0.0.1", 8000, None, 20)
    d = ServeOptions()
    assert (args.max_batch, args.max_wait_ms, args.max_queue) == (d.max_batch, d.max_wait_ms, d.max_queue)
    for bad in (["--port", "70000"], ["--max-body-mb", "0"], ["--max-wait-ms", "-1"], ["--max-queue", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])


def test_serve_without_a_model_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--model", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err


# ----------------------------------------------------------------------------- the page, in Chromium

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """Debian's Chromium, or skip (fail under `make test` as root, where the Makefile installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    required = os.environ.get("LANDMARKS_BROWSER_TEST") == "required"
    if not found:
        message = "no Chromium found: install Debian's `chromium` package (apt-get install chromium)"
        pytest.fail(message) if required else pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "playwright is not installed (pip install -r requirements.txt)"
        pytest.fail(message) if required else pytest.skip(message)
    return found


def test_the_page_tags_chosen_and_dropped_photos_in_chromium(photos: Path, model: Path,  # noqa: F811
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    chosen = ["good.jpg", "gray.png", "rgba.png", "palette.png", "rotated.jpg", "fake.jpg"]
    assert main(["tag", *[str(photos / n) for n in chosen], "--json", "--model", str(model)]) == 1
    scores = sorted(r["score"] for r in json.loads(capsys.readouterr().out) if r["status"] == "ok")
    # a threshold between the scores, so that the page shows tags and "no landmark" alike
    split_file = write_predictor(tmp_path / "split.pt", (scores[1] + scores[2]) / 2)
    # what the page must show: the predictor's own answers, as `landmarks tag --json` gives them
    main(["tag", *[str(photos / n) for n in chosen], "--json", "--model", str(split_file)])
    expected = {Path(row["path"]).name: row for row in json.loads(capsys.readouterr().out)}
    with running(create_app(load_predictor(split_file))) as base:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                           headless=True, args=CHROMIUM_FLAGS,
                                                           viewport={"width": 1280, "height": 900})
            try:
                page = browser.new_page()
                page.goto(base)
                page.wait_for_function("document.getElementById('model').textContent.includes('3 landmarks')")
                page.set_input_files("#files", [str(photos / n) for n in chosen])
                dropped = page.evaluate_handle(
                    """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                                const dt = new DataTransfer();
                                dt.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"})); return dt; }""",
                    base64.b64encode((photos / "good.jpg").read_bytes()).decode())
                page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
                page.wait_for_function("document.querySelectorAll('.card').length === 7 && "
                                       "!document.querySelector('.card[data-status=pending]')", timeout=60_000)
                shown = page.eval_on_selector_all(".card", """cards => cards.map(c => ({
                    file: c.dataset.file, status: c.dataset.status, tag: c.querySelector('.tag').textContent,
                    bars: [...c.querySelectorAll('.bars .value')].map(v => v.textContent)}))""")
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            finally:
                browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
    cards = {c["file"]: c for c in shown}
    assert set(cards) == {*chosen, "dropped.jpg"}
    expected["dropped.jpg"] = expected["good.jpg"]
    for name, card in cards.items():
        row = expected[name]
        if row["status"] == "error":
            assert card["status"] == "error" and card["tag"] == "error" and card["bars"] == []
        elif row["landmark_id"] is None:
            assert card["status"] == "no-landmark" and card["tag"] == "no landmark"
        else:
            assert card["status"] == "tagged" and card["tag"] == row["name"] + row["hashtag"]
        if row["top5"]:  # the bars' labels, in percent to one decimal
            shown_percent = [float(v.rstrip("%")) for v in card["bars"]]
            np.testing.assert_allclose(shown_percent, [100 * t["probability"] for t in row["top5"]], atol=0.051)
    assert {c["status"] for c in shown} == {"tagged", "no-landmark", "error"}
