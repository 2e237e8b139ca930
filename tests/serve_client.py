"""Clients of `landmarks serve` for the tests and bench/bench_serve.py: start the real command, load it.

Everything talks to 127.0.0.1 only, and every loop is bounded in time and count.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests

REPO = Path(__file__).resolve().parents[1]
STARTED = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


@contextmanager
def cli_server(model: Path, log: Path, *options: str, timeout: float = 120) -> Iterator[str]:
    """`landmarks serve --port 0 ...` in a child process; yields its base URL, stops it on exit.

    The log goes to a file, not a pipe: the access log of a load test would fill a pipe and stall the server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "landmarks.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                                 "--model", str(model), *options], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout
        while not (found := STARTED.search(log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`landmarks serve` did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield found.group(1)
    finally:
        proc.terminate()  # SIGTERM: uvicorn shuts down gracefully
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Load:
    """What `load` saw: one latency per answered request, and every failure, by kind."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    photos: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.photos / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return 1000 * self.latencies[0] if self.latencies else float("nan")
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q) - 1]


def load(url: str, photos: list[tuple[str, bytes]], *, clients: int, seconds: float, max_requests: int = 100_000,
         timeout: float = 60) -> Load:
    """`clients` threads POST the photos (one per request, in turn) to /tag until `seconds` have passed.

    A request counts as an error unless it is a 200 whose every row is ok: a 503 is one too."""
    result, lock = Load(), threading.Lock()
    deadline = time.monotonic() + seconds
    sent = iter(range(max_requests))  # a shared budget: the loop stops by count as well as by time

    def client(index: int) -> None:
        with requests.Session() as session:
            i = index
            while time.monotonic() < deadline and next(sent, None) is not None:
                name, data = photos[i % len(photos)]
                i += 1
                start = time.monotonic()
                try:
                    r = session.post(f"{url}/tag", files=[("files", (name, data, "image/jpeg"))], timeout=timeout)
                    kind = None if r.status_code == 200 and all(row["status"] == "ok" for row in r.json()) \
                        else f"HTTP {r.status_code}" if r.status_code != 200 else "row error"
                except requests.RequestException as e:
                    kind = type(e).__name__
                with lock:
                    if kind is None:
                        result.latencies.append(time.monotonic() - start)
                        result.photos += 1
                    else:
                        result.errors[kind] = result.errors.get(kind, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - start
    return result
