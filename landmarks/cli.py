"""The `landmarks` command: recognise landmarks in photos with the exported predictor.

    landmarks predict IMAGE... [--top-k 5] [--model models/predictor.pt2] [--plot out.png]
    landmarks tag PATH... [--json] [--output FILE] [--batch-size 8] [--model models/predictor.pt2]
    landmarks serve [--host 127.0.0.1] [--port 8000] [--model models/predictor.pt2] (see landmarks/serve.py)

All use only a predictor file (landmarks.predictor_file: .pt2, .pt or .onnx, with the
classes/tagging/preprocess JSON inside it), so they need torch (onnxruntime for .onnx) and Pillow
but none of the training code. Without --model they take models/predictor.pt2, the torch.export
program, and fall back to the TorchScript models/predictor.pt where that is missing or does not load
(a .pt2 written by a newer torch, say). Every photo is decoded by
landmarks.imageio.decode_image (EXIF orientation, any colour mode, decompression-bomb limit).

Exit status: 0 when every file was processed, 1 when at least one file failed (its row or line
says why; the others are still processed), 2 on usage errors (bad arguments, a missing or
unusable model file).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm import tqdm

from landmarks.answers import NO_LANDMARK, describe_error, format_rows, ranked, read_image, result_row, row_of
from landmarks.batching import DEFAULT_BATCH_SIZE, predict_in_batches
from landmarks.files import atomic_write_bytes
from landmarks.imageio import DEFAULT_MAX_PIXELS
from landmarks.predictor_file import LoadedPredictor, PredictorFileError, display_name, load_predictor
from landmarks.service import ServeOptions

# Without --model: the torch.export program, else TorchScript (deprecated by torch, but it loads on any version).
DEFAULT_MODELS = ("models/predictor.pt2", "models/predictor.pt")
# What a folder walk picks up; files named explicitly are always tried, whatever their extension.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


# ----------------------------------------------------------------------------- inputs

def find_images(paths: Iterable[str]) -> list[Path]:
    """Files as given, and the image files under each folder (recursive, sorted, hidden ones skipped).

    A path that does not exist is kept, so that it is reported as a failed file.
    """
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            found.append(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files)
                      if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return list(dict.fromkeys(found))  # the same file given twice is processed once


# ----------------------------------------------------------------------------- tag

def tag_files(
    predictor: LoadedPredictor, files: list[Path], *, batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One result row per file, in input order. Bad files become error rows; nothing stops the run.
    Files are decoded one by one as the batching (landmarks.batching) asks for them."""
    resize_size = int(predictor.preprocess["resize_size"])
    images = ((path, read_image(path, resize_size=resize_size, max_pixels=max_pixels)) for path in files)
    rows = []
    with tqdm(total=len(files), unit="img", desc="tag", file=sys.stderr, disable=None if progress else True,
              dynamic_ncols=True) as bar:
        for result in predict_in_batches(predictor, images, batch_size=batch_size):
            rows.append(row_of(result, predictor))
            bar.update(1)
    return rows


def load_noting_deprecations(path: str, threads: int | None) -> LoadedPredictor:
    """load_predictor, with what it warns about the file's format (TorchScript: deprecated by torch, and
    what to use instead) printed as one `landmarks: note:` line each rather than a Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        predictor = load_predictor(path, threads=threads)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"landmarks: note: {path}: {message}", file=sys.stderr)
    return predictor


def open_predictor(model: str | None, threads: int | None = None) -> LoadedPredictor:
    """The predictor file `model`, or the first of DEFAULT_MODELS that loads (saying so on stderr when
    one that exists did not); PredictorFileError if none does."""
    if model is not None:
        return load_noting_deprecations(model, threads)
    preferred, fallback = DEFAULT_MODELS
    try:
        return load_noting_deprecations(preferred, threads)
    except PredictorFileError as e:
        if not Path(fallback).is_file():
            raise
        if Path(preferred).exists():
            print(f"landmarks: note: {e}; using {fallback}", file=sys.stderr)
        return load_noting_deprecations(fallback, threads)


def cmd_tag(args: argparse.Namespace) -> int:
    predictor = open_predictor(args.model, args.threads)
    if predictor.threshold > 1.0:
        print("landmarks: note: this model never reached its target precision on validation, "
              "so every photo is tagged 'no landmark'", file=sys.stderr)
    files = find_images(args.paths)
    rows = tag_files(predictor, files, batch_size=args.batch_size, max_pixels=args.max_pixels)
    text = format_rows(rows, args.json)
    if args.output:
        atomic_write_bytes(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    failed = sum(r["status"] == "error" for r in rows)
    tagged = sum(r["status"] == "ok" and r["landmark_id"] is not None for r in rows)
    print(f"landmarks: {len(rows)} files: {tagged} tagged, {len(rows) - tagged - failed} no landmark, {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- predict

def cmd_predict(args: argparse.Namespace) -> int:
    predictor = open_predictor(args.model, args.threads)
    k = min(args.top_k, len(predictor.classes))
    resize_size = int(predictor.preprocess["resize_size"])
    failed = 0
    shown: list[tuple[str, Any, list[str], list[float], str]] = []
    for path in find_images(args.images):
        x = read_image(path, resize_size=resize_size, max_pixels=args.max_pixels)
        _, probs, score, error = next(predict_in_batches(predictor, [(path, x)], batch_size=1))
        if error is not None:
            failed += 1
            print(f"{path}: error: {describe_error(error)}", file=sys.stderr)
            continue
        order = ranked(probs, k)
        names = [display_name(predictor.classes[j]) for j in order]
        row = result_row(path, probs, score, predictor)
        if row["landmark_id"] is not None:
            verdict = f"-> {row['name']} {row['hashtag']} (score {score:.3f})".rstrip()
        elif predictor.threshold > 1.0:
            verdict = f"-> {NO_LANDMARK} (this model tags nothing: it never reached its target precision)"
        else:
            verdict = f"-> {NO_LANDMARK} (score {score:.3f} < threshold {predictor.threshold:.3f})"
        print(str(path))
        for rank, (j, name) in enumerate(zip(order, names), start=1):
            print(f"  {rank:>2}. {name:<50} {probs[j]:.4f}")
        print(f"  {verdict}")
        if args.plot:
            shown.append((str(path), x.permute(1, 2, 0).numpy(), names, [float(probs[j]) for j in order], verdict))
    if args.plot:
        if shown:
            from landmarks.reports import plot_predictions  # matplotlib only when a plot is asked for

            plot_predictions(shown, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        else:
            print("landmarks: no image could be read, so no plot was written", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- serve

def cmd_serve(args: argparse.Namespace) -> int:
    from landmarks.serve import serve  # FastAPI and uvicorn only for this command

    options = ServeOptions(max_body_mb=args.max_body_mb, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                           max_queue=args.max_queue, max_pixels=args.max_pixels)
    return serve(open_predictor(args.model, args.threads), host=args.host, port=args.port, options=options)


# ----------------------------------------------------------------------------- main

def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _at_least(low: float, *, inclusive: bool) -> Any:
    def check(text: str) -> float:
        value = float(text)
        if not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(f"{value} is not {'>=' if inclusive else '>'} {low}")
        return value
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landmarks", description="Recognise landmarks in photos.",
                                     epilog="exit status: 0 all files ok, 1 some file failed, 2 usage error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="predictor file: .pt2 (torch.export), .pt (TorchScript) or .onnx "
                                        f"(default {DEFAULT_MODELS[0]}, else {DEFAULT_MODELS[1]})")
        p.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS,
                       help="refuse images with more pixels than this (decompression-bomb guard)")
        p.add_argument("--threads", type=_positive, default=None,
                       help="CPU threads for inference (default: the runtime's choice; 1 is best on a busy machine)")

    p = sub.add_parser("predict", help="print the most likely landmarks of each photo")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos (folders are searched for images)")
    p.add_argument("--top-k", type=_positive, default=5, help="how many landmarks to list per photo (default 5)")
    p.add_argument("--plot", metavar="PNG", help="also draw each photo beside a bar chart of its top landmarks")
    common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("tag", help="tag photos and folders of photos; writes CSV (default) or JSON",
                       description="One row per file: path, status (ok/error), landmark_id, name, hashtag, "
                                   "confidence (probability of the best landmark), score (how much the photo looks "
                                   "like that landmark's training photos), category info, error; JSON rows also have "
                                   "top5 (the most probable landmarks with their probabilities). Below the model's "
                                   f"tagging threshold the name is '{NO_LANDMARK}' and the landmark fields are empty.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos and folders (searched recursively)")
    p.add_argument("--json", action="store_true", help="write JSON instead of CSV")
    p.add_argument("--output", metavar="FILE", help="write here instead of to stdout")
    p.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE,
                   help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})")
    common(p)
    p.set_defaults(func=cmd_tag)

    d = ServeOptions()
    p = sub.add_parser("serve", help="tag photos over HTTP, with a page to try it (GET /, GET /health, POST /tag)",
                       description="POST /tag takes multipart fields named 'files' and answers a JSON list of the rows "
                                   "`landmarks tag --json` prints. Images from concurrent requests share forward passes.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one, logged at start)")
    p.add_argument("--max-body-mb", type=_at_least(0, inclusive=False), default=d.max_body_mb,
                   help=f"refuse request bodies over this many MiB with 413 (default {d.max_body_mb:g})")
    p.add_argument("--max-batch", type=_positive, default=d.max_batch,
                   help=f"images per forward pass (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=_at_least(0, inclusive=True), default=d.max_wait_ms,
                   help=f"how long an image waits for same-size partners before its batch runs (default {d.max_wait_ms:g})")
    p.add_argument("--max-queue", type=_positive, default=d.max_queue,
                   help=f"images admitted and not yet answered; past it requests get 503 with Retry-After; also "
                        f"the most files per request (default {d.max_queue})")
    common(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `landmarks` console script; returns the exit status (argparse exits 2 itself)."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except PredictorFileError as e:
        print(f"landmarks: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
