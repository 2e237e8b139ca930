"""Benchmark `landmarks serve`: throughput and p50/p99 latency for 1, 8 and 32 concurrent clients.

Starts the real command on a free 127.0.0.1 port, with models/predictor.pt2 or .pt if one exists, else the
predictor bench_predictor.py measures: what the pipeline exports by default (params.yaml's backbone,
random weights, a gallery, the tagging score), so the forward passes cost what real ones do. With
--tiny, the tests' tiny predictor instead (VGG at 32 px: the numbers are then mostly HTTP, multipart and
decoding). It POSTs 427x320 JPEGs, the size the download stage stores, one photo per request. Each level runs
--seconds; the 32-client level runs --soak-seconds (20 by default: the issue's load test, which the test
suite runs for 5 s) and must see no error. Then 32 clients again against a server with --max-batch 1,
to show what sharing forward passes across requests buys (printed as a ratio).

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

from landmarks.cli import DEFAULT_MODELS  # noqa: E402
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


def build_model(path: Path, tiny: bool) -> tuple[Path, str]:
    """A predictor file written to `path`, and a line that says what it is."""
    if tiny:
        from tests.test_cli import write_predictor

        return write_predictor(path, -1.0), "the tests' tiny predictor (VGG at 32 px)"
    return default_predictor(path)


def default_predictor(path: Path, num_classes: int = 50) -> tuple[Path, str]:
    """bench_predictor.py's tagger, exported as the stage exports the CLI's default file (.pt2, torch.export)."""
    from bench_predictor import bench_tagger

    from landmarks.export import build_program
    from landmarks.predictor_file import program_bytes

    tagger, spec, classes, what = bench_tagger(num_classes)
    path.write_bytes(program_bytes(build_program(tagger, spec.preprocess), classes=classes,
                                   tagging={"threshold": 0.5}, preprocess=spec.preprocess))
    return path, what.replace(",", " (random weights),", 1)


def line(label: str, result: Load) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items())) or "none"
    return (f"{label:<28} {result.throughput:7.1f} photos/s   p50 {result.percentile_ms(50):7.1f} ms   "
            f"p99 {result.percentile_ms(99):7.1f} ms   {result.photos:6d} ok in {result.seconds:4.1f} s   errors: {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="predictor file (default: models/predictor.pt2 or .pt, else the default pipeline's, built here)")
    parser.add_argument("--tiny", action="store_true", help="build the tests' tiny predictor instead")
    parser.add_argument("--seconds", type=float, default=5, help="per level (default 5)")
    parser.add_argument("--soak-seconds", type=float, default=20, help="for 32 clients (default 20)")
    parser.add_argument("--threads", default="1", help="the server's --threads (default 1: the clients need the other core)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # the file `landmarks serve` would open without --model, if the pipeline has made one
        found = [REPO / m for m in DEFAULT_MODELS if (REPO / m).is_file()]
        model, about = args.model or (found[0] if found else REPO / DEFAULT_MODELS[0]), ""
        if args.tiny or not model.exists():
            model, about = build_model(Path(tmp) / ("predictor.pt" if args.tiny else "predictor.pt2"), args.tiny)
        print(f"model: {about or model}   photos: {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, one per request   "
              f"server: --threads {args.threads}", flush=True)
        shots = photos()
        failed = False
        with cli_server(model, Path(tmp) / "serve.log", "--threads", args.threads) as url:
            load(url, shots, clients=4, seconds=3)  # warm-up: TorchScript optimises after a few passes; connections
            for clients, seconds in ((1, args.seconds), (8, args.seconds), (32, args.soak_seconds)):
                batched = load(url, shots, clients=clients, seconds=seconds)
                print(line(f"{clients:2d} clients (batch <= 8)", batched), flush=True)
                failed |= bool(batched.errors)
        with cli_server(model, Path(tmp) / "serve1.log", "--threads", args.threads, "--max-batch", "1") as url:
            load(url, shots, clients=4, seconds=3)
            alone = load(url, shots, clients=32, seconds=args.seconds)
            print(line("32 clients, --max-batch 1", alone), flush=True)
            failed |= bool(alone.errors)
    # `batched` is the 32-client run: the same load, with and without sharing forward passes
    print(f"batching across requests, 32 clients: {batched.throughput / alone.throughput:.2f}x the throughput, "
          f"{batched.percentile_ms(50) / alone.percentile_ms(50):.2f}x the p50 latency of --max-batch 1")
    print("FAIL: some requests failed" if failed else "OK: no request failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
