"""Throughput of the image downloader against a plain sequential `requests.get` loop.

A local server (a forked process, so it does not share our GIL) serves 2,000 generated JPEGs of
a few KB to ~100 KB and adds 50 ms of latency to every request, like a distant server. Our
downloader (params.yaml's `download` settings: 32 requests in flight, shared by one process per
usable core; full decode + resize + JPEG encode + atomic write per image) fetches all 2,000, first
in one process (as before worker processes) and then as params.yaml says, and prints the ratio of
the two; the sequential loop
only GETs the bytes, and is timed on the first 200 and extrapolated (at ~50 ms per request it
would take ~2 minutes for all). Besides the rate: the CPU per image (this process and its worker
processes, not the server) and the rate per usable core, the figure to compare across machines.
A third pass only GETs the bytes with as many requests in flight as ours (no decode, no store): the
most any downloader can get from this server at that concurrency, so the rate ours reaches is also
printed as a share of it. On 2 cores, 32 requests at 50 ms latency cap the rate before the CPU does;
`--workers 64` measures the CPU-bound rate per core.
Target: ours >= 20x the sequential rate.   Run from the repo root: `python bench/bench_download.py`
(`--processes N` to compare N worker processes with one, `--workers N` to override download.workers).
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.faultserver when run as a script

from landmarks.download import download_images, fetch_image_bytes  # noqa: E402
from landmarks.http import Client  # noqa: E402
from landmarks.params import DownloadParams, load_params  # noqa: E402
from landmarks.workers import resolve_processes, run_in_threads, usable_cores  # noqa: E402
from tests.faultserver import FaultServer, Respond, make_jpeg  # noqa: E402

LATENCY = 0.05


def cpu_seconds() -> float:
    """All threads of this process, and of the worker processes it has waited for (the download's,
    once it returns; not the server's, which ends last)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def make_images(count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEGs from 120x72 to 620x527 pixels at quality 60-90: a few KB to ~100 KB."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        width = int(rng.integers(120, 621))
        height = int(width * rng.uniform(0.6, 0.85))
        images.append(make_jpeg(width, height, seed=i, quality=int(rng.integers(60, 91))))
    return images


def timed_download(frame: pd.DataFrame, folder: Path, cfg: DownloadParams, processes: int, cores: int) -> float:
    """Download every row into `folder` with `cfg`; print the rate and CPU; return images/s.

    The folders of all passes are deleted together at the end: deleting thousands of files makes
    ext4 skip their inodes for a while, and the next pass would pay for that in every file it creates."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = download_images(frame, folder, cfg, progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    if result.downloaded != len(frame):
        sys.exit(f"error: only {result.downloaded} of {len(frame)} downloaded: {result.failures_by_reason}")
    rate = len(frame) / seconds
    print(f"ours ({cfg.workers} workers in {processes} process{'es' if processes > 1 else ''}, "
          f"decode+resize+encode+store): {len(frame)} images in {seconds:.1f} s = {rate:.0f} images/s "
          f"= {rate / cores:.0f} images/s per core ({cores} usable)")
    # CPU-bound on small machines: if this is well below the core count, other processes
    # (the server here) were competing for the CPU and the rate above understates the downloader.
    print(f"  CPU: {cpu / len(frame) * 1000:.1f} ms per image, {cpu / seconds:.2f} of {cores} cores busy on average")
    return rate


def bytes_only(urls: list[str], cfg: DownloadParams) -> float:
    """Images/s of GETs alone with cfg.workers in flight (the same client, nothing decoded or stored)."""
    client = Client(cfg.user_agent, cfg.workers)
    start = time.perf_counter()
    for _ in run_in_threads(urls, lambda url: fetch_image_bytes(client, url, cfg, ("http",)), cfg.workers):
        pass
    rate = len(urls) / (time.perf_counter() - start)
    print(f"bytes only ({cfg.workers} requests in flight, nothing decoded or stored): {rate:.0f} images/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=200, help="how many the sequential loop fetches")
    parser.add_argument("--processes", help="override download.processes (auto or a number)")
    parser.add_argument("--workers", type=int, help="override download.workers (requests in flight)")
    args = parser.parse_args()

    cfg = load_params(REPO / "params.yaml").download
    if args.workers:
        cfg = dataclasses.replace(cfg, workers=args.workers)
    if args.processes:
        cfg = dataclasses.replace(cfg, processes=args.processes if args.processes == "auto" else int(args.processes))
    processes, cores = resolve_processes(cfg.processes, cfg.workers), usable_cores()
    distinct = make_images(100)  # served under many URLs: the content is not what is measured
    sizes = [len(b) for b in distinct]
    server = FaultServer(latency=LATENCY)
    rows = []
    for n in range(args.images):
        image_id = f"{n:016x}"
        rows.append((image_id, server.route(f"/{image_id}.jpg", Respond(body=distinct[n % len(distinct)])), n % 50))
    server.start_process()
    print(f"server: {args.images} images of {min(sizes) // 1024}-{max(sizes) // 1024} KB "
          f"(mean {np.mean(sizes) / 1024:.0f} KB), {LATENCY * 1000:.0f} ms latency per request")
    frame = pd.DataFrame(rows, columns=["id", "url", "landmark_id"])
    try:
        # One process (the downloader before worker processes) and params' setting, side by side
        # against the same server, so their ratio does not depend on how busy the machine is.
        rates = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in dict.fromkeys((1, processes)):
                folder = Path(tmp) / f"{n}-processes"
                rates[n] = ours = timed_download(frame, folder, dataclasses.replace(cfg, processes=n), n, cores)
        if len(rates) > 1:
            print(f"ratio {processes} processes/1 process: {rates[processes] / rates[1]:.2f} (images/s, and per core)")
        bound = bytes_only(frame["url"].tolist(), cfg)
        print(f"ours reaches {ours / bound:.0%} of the bytes-only rate at {cfg.workers} requests in flight")

        start = time.perf_counter()
        for _, url, _ in rows[: args.sequential]:
            requests.get(url, timeout=30).content
        seq_s = time.perf_counter() - start
        seq = args.sequential / seq_s
        print(f"sequential requests.get (bytes only): {args.sequential} images in {seq_s:.1f} s = {seq:.1f} images/s "
              f"(timed on {args.sequential} of {args.images}; all {args.images} would take ~{args.images / seq:.0f} s, "
              f"extrapolated)")
    finally:
        server.stop()
    ratio = ours / seq
    print(f"speed-up: {ratio:.1f}x", "PASS" if ratio >= 20 else "FAIL", "(target >= 20x)")
    if ratio < 20:
        sys.exit(1)


if __name__ == "__main__":
    main()
