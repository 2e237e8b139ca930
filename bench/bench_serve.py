"""Benchmark `landmarks serve`: throughput and p50/p99 latency for 1, 8 and 32 concurrent clients.

Starts the real command on a free 127.0.0.1 port, with models/predictor.pt if it exists (else a tiny
predictor it builds: the tests' VGG at 32 px, so the numbers are mostly HTTP, multipart and decoding),
and POSTs 427x320 JPEGs, the size the download stage stores, one photo per request. Each level runs
--seconds; the 32-client level runs --soak-seconds (20 by default: the issue's load test, which the test
suite runs for 5 s) and must see no error. Then 32 clients again against a server with --max-batch 1,
to show what sharing forward passes across requests buys.

Every loop is bounded in time and in requests, and the server is stopped at the end.
Exit status 1 if any request failed (a 503 counts).
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.* when run as a script

from tests.serve_client import Load, cli_server, load  # noqa: E402

PHOTO_SIZE = (427, 320)


def photos(n: int = 8) -> list[tuple[str, bytes]]:
    """Distinct smooth photos of one size (so the server can batch them), each ~20-40 KB as JPEG."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = PHOTO_SIZE
        y, x = np.mgrid[0:h, 0:w]
        arr = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 40 * i % 256)], -1) + rng.normal(0, 8, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append((f"photo{i}.jpg", buf.getvalue()))
    return out


def tiny_model(path: Path) -> Path:
    import torch

    from tests.test_cli import write_predictor

    torch.set_num_threads(1)
    return write_predictor(path, -1.0)


def line(label: str, result: Load) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items())) or "none"
    return (f"{label:<28} {result.throughput:7.1f} photos/s   p50 {result.percentile_ms(50):7.1f} ms   "
            f"p99 {result.percentile_ms(99):7.1f} ms   {result.photos:6d} ok in {result.seconds:4.1f} s   errors: {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="predictor file (default: models/predictor.pt, else a tiny one)")
    parser.add_argument("--seconds", type=float, default=5, help="per level (default 5)")
    parser.add_argument("--soak-seconds", type=float, default=20, help="for 32 clients (default 20)")
    parser.add_argument("--threads", default="1", help="the server's --threads (default 1: the clients need the other core)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or (REPO / "models" / "predictor.pt")
        if not model.exists():
            model = tiny_model(Path(tmp) / "tiny.pt")
        print(f"model: {model}   photos: {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, one per request", flush=True)
        shots = photos()
        failed = False
        with cli_server(model, Path(tmp) / "serve.log", "--threads", args.threads) as url:
            load(url, shots, clients=4, seconds=1)  # warm-up: first forward passes, connections
            for clients, seconds in ((1, args.seconds), (8, args.seconds), (32, args.soak_seconds)):
                result = load(url, shots, clients=clients, seconds=seconds)
                print(line(f"{clients:2d} clients (batch <= 8)", result), flush=True)
                failed |= bool(result.errors)
        with cli_server(model, Path(tmp) / "serve1.log", "--threads", args.threads, "--max-batch", "1") as url:
            load(url, shots, clients=4, seconds=1)
            result = load(url, shots, clients=32, seconds=args.seconds)
            print(line("32 clients, --max-batch 1", result), flush=True)
            failed |= bool(result.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
