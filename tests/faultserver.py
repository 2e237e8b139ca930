"""A local HTTP server that misbehaves on purpose, for testing downloaders without the internet.

    with FaultServer(latency=0.01) as server:
        server.route("/a.jpg", Respond(500), Respond(jpeg))   # 1st request: 500, then the image
        server.route("/b.jpg", Stall(5.0, jpeg))               # headers, half the body, then silence
        server.route("/c.jpg", Drip(jpeg, head=600, step=4, interval=0.25))  # then 16 bytes a second
        requests.get(server.url("/a.jpg"))
        server.count("/a.jpg")                                 # requests seen for that path

The i-th request to a path gets the i-th action of its route (the last one repeats). Actions:
Respond (status, body, headers; honours `Range: bytes=N-` on 200), Stall, Reset (TCP RST, no
response), Cut (announces the full length, sends part, closes), Drip (the body a few bytes at a
time, slowly enough to hold a client forever), Redirect. It listens on
127.0.0.1 with a free port, in a thread (`start`) or in a forked process (`start_process`, so a
benchmark's server does not compete with the client for the GIL). Also: generators for the
test images (noise JPEGs, a tiny PNG with 20000x20000 pixels, a GLDv2-style train.csv).
"""
from __future__ import annotations

import io
import os
import random
import signal
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Respond:
    """A complete response. A 200 with a body honours `Range: bytes=N-` (206) when `ranges`.
    Without `send_length` there is no Content-Length: the body ends when the connection closes."""

    status: int = 200
    body: bytes = b""
    content_type: str = "image/jpeg"
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = True
    send_length: bool = True


@dataclass
class Stall:
    """Headers with the full Content-Length and the first half of `body`, then nothing for `seconds`."""

    seconds: float
    body: bytes = b"\xff\xd8" + b"\0" * 1000


@dataclass
class Reset:
    """Close the connection with a TCP reset before any response."""


@dataclass
class Cut:
    """Headers with the full Content-Length, the first `at` bytes of `body` (from the requested
    range start), then close: a transfer interrupted midway."""

    body: bytes
    at: int


@dataclass
class Drip:
    """Headers with the full Content-Length (206 from a `Range: bytes=N-` start), the first `head`
    bytes of the body at once, then `step` bytes every `interval` seconds; after `silent_after`
    seconds of that (if set), nothing more: a server that slows to a trickle, then hangs."""

    body: bytes
    head: int = 0
    step: int = 1
    interval: float = 0.5
    silent_after: float | None = None


@dataclass
class Redirect:
    location: str
    status: int = 302


Action = Respond | Stall | Reset | Cut | Drip | Redirect


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: lets the client's pool reuse connections
    # TCP_NODELAY, as real web servers: otherwise the body, written after the headers, waits for the
    # client's delayed ACK (~40 ms) on every reused connection.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence the per-request log
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        action = owner._next_action(path, dict(self.headers.items()))
        try:
            if owner.latency:
                time.sleep(owner.latency)
            self._act(action)
        finally:
            with owner._lock:
                owner._active -= 1

    def _act(self, action: Action | None) -> None:
        owner = self.server.owner
        if action is None:
            self._send(404, b"not found", "text/plain")
        elif isinstance(action, Respond):
            self._respond(action)
        elif isinstance(action, Redirect):
            self._send(action.status, b"", "text/plain", {"Location": action.location})
        elif isinstance(action, Reset):
            # SO_LINGER with timeout 0 makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif isinstance(action, Stall):
            self._send_head(200, len(action.body), "image/jpeg")
            self.wfile.write(action.body[: len(action.body) // 2])
            self.wfile.flush()
            owner._stopping.wait(action.seconds)
            self.close_connection = True
        elif isinstance(action, Cut):
            self.wfile.write(self._send_range_head(action.body)[: action.at])
            self.wfile.flush()
            self.close_connection = True
        elif isinstance(action, Drip):
            self._drip(action)
            self.close_connection = True

    def _drip(self, d: Drip) -> None:
        stopping = self.server.owner._stopping
        body = self._send_range_head(d.body)
        self.wfile.write(body[: d.head])
        start = time.monotonic()
        try:
            for pos in range(d.head, len(body), d.step):
                if stopping.wait(d.interval):
                    return
                if d.silent_after is not None and time.monotonic() - start >= d.silent_after:
                    stopping.wait(60)
                    return
                self.wfile.write(body[pos:pos + d.step])
        except OSError:  # the client gave up: that is what a drip is for
            pass

    def _send_range_head(self, full: bytes) -> bytes:
        """Send the head of a response to `full` from the requested range start; returns the body to send."""
        start = _range_start(self.headers.get("Range"), len(full)) or 0
        body = full[start:]
        if start:
            self._send_head(206, len(body), "application/octet-stream",
                            {"Content-Range": f"bytes {start}-{len(full) - 1}/{len(full)}"})
        else:
            self._send_head(200, len(body), "application/octet-stream")
        return body

    def _respond(self, r: Respond) -> None:
        start = _range_start(self.headers.get("Range"), len(r.body)) if r.ranges and r.status == 200 else None
        if start is not None and start >= len(r.body) > 0:
            self._send(416, b"", r.content_type, {"Content-Range": f"bytes */{len(r.body)}"})
        elif start:
            self._send(206, r.body[start:], r.content_type,
                       {**r.headers, "Content-Range": f"bytes {start}-{len(r.body) - 1}/{len(r.body)}"})
        elif not r.send_length:
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(r.body)
            self.close_connection = True
        else:
            self._send(r.status, r.body, r.content_type, r.headers)

    def _send_head(self, status: int, length: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        headers = dict(headers or {})
        self.send_header("Content-Length", headers.pop("Content-Length", str(length)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._send_head(status, len(body), content_type, headers)
        self.wfile.write(body)


def _range_start(header: str | None, size: int) -> int | None:
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    start = header[len("bytes="):-1]
    return int(start) if start.isdigit() else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: FaultServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or get reset are the point here, not errors


class FaultServer:
    """The server (see the module docstring). `requests` logs (path, headers) of every request;
    `max_active` is the most requests it was handling at once."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.routes: dict[str, list[Action]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._counts: dict[str, int] = {}
        self._active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def route(self, path: str, *actions: Action) -> str:
        """Serve `actions` at `path` (request i gets action i, the last repeats); returns the URL."""
        with self._lock:
            self.routes[path] = list(actions)
            self._counts[path] = 0
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p == path)

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _next_action(self, path: str, headers: dict[str, str]) -> Action | None:
        with self._lock:
            self.requests.append((path, headers))
            self._active += 1
            self.max_active = max(self.max_active, self._active)
            actions = self.routes.get(path)
            if not actions:
                return None
            i = self._counts[path]
            self._counts[path] = i + 1
            return actions[min(i, len(actions) - 1)]

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def start_process(self) -> FaultServer:
        """Serve from a forked child process (routes as configured now; the log stays in the child)."""
        pid = os.fork()
        if pid == 0:  # child: serve until killed
            try:
                self._httpd.serve_forever(poll_interval=0.05)
            finally:
                os._exit(0)
        self._pid = pid
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._pid is not None:
            os.kill(self._pid, signal.SIGTERM)
            os.waitpid(self._pid, 0)
            self._pid = None
        elif self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Test data


def make_jpeg(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    """A photo-like JPEG: smooth colour gradients plus noise (so its size is realistic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    img = np.stack([base[c] + 80 * np.sin((x * (c + 1) + y) / (17.0 + 5 * c)) for c in range(3)], axis=-1)
    img += rng.normal(0, 12, size=img.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels, ~60 KB for 20000x20000: a decompression
    bomb (400 M pixels). Written by hand so that the pixels are never allocated here either."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


HTML_PAGE = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Rate limited</body></html>"


def gldv2_rows(count: int, num_landmarks: int, seed: int = 0) -> list[tuple[str, int]]:
    """`count` (id, landmark_id) pairs with distinct 16-hex ids, as in GLDv2's train.csv."""
    rng = random.Random(seed)
    ids = set()
    while len(ids) < count:
        ids.add(f"{rng.getrandbits(64):016x}")
    return [(image_id, i % num_landmarks) for i, image_id in enumerate(sorted(ids))]
