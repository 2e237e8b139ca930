"""Benchmark the exported predictor files (.pt TorchScript, .pt2 torch.export, .onnx ONNX).

1. Per-image latency (batch 1) of each file and of the eager tagger on the same input,
   preprocessing and open-set score included (uint8 photo -> probabilities and score), after a
   warm-up: the median of many interleaved runs. TorchScript must not be slower than the eager
   model by more than 5%.
2. Start-up: a fresh `python` that loads the file and tags one photo, per format (what every
   `landmarks predict` call pays).
3. Folder tagging rate (images/s) of `landmarks tag` over ~200 generated photos, per format,
   batched by size (the default) and, for TorchScript, one image per forward pass, to justify the
   batching.

Model: params.yaml's `model` (random weights) at its train_transfer preprocessing, with a gallery of
random training embeddings (20 per class) and params.yaml's tagging score.
Exit status 1 if the TorchScript latency ratio is above the limit.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landmarks import cli  # noqa: E402
from landmarks.export import export_predictors  # noqa: E402
from landmarks.models import build_model, split_at_last_linear  # noqa: E402
from landmarks.openset import Tagger  # noqa: E402
from landmarks.params import load_params  # noqa: E402
from landmarks.predictor_file import load_predictor  # noqa: E402
from landmarks.train_spec import TrainSpec, for_transfer  # noqa: E402
from landmarks.transforms import preprocess_uint8  # noqa: E402

NUM_CLASSES = 50
MAX_RATIO = 1.05
PHOTO_SIZE = (427, 320)  # what the download stage stores: shorter side 320


def median_ms(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def make_photos(folder: Path, n: int) -> None:
    """Smooth random photos, a quarter of them portrait, saved as JPEG like a camera folder."""
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = PHOTO_SIZE if i % 4 else PHOTO_SIZE[::-1]
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(folder / f"photo_{i:04d}.jpg", quality=90)


STARTUP = """
import sys, time
t = time.perf_counter()
sys.path.insert(0, sys.argv[2])
from landmarks.answers import load_image
from landmarks.predictor_file import load_predictor
p = load_predictor(sys.argv[1])
p(load_image(sys.argv[3], resize_size=int(p.preprocess["resize_size"])).unsqueeze(0))
print(time.perf_counter() - t)
"""


def bench_tagger(num_classes: int = NUM_CLASSES) -> tuple[Tagger, TrainSpec, list[dict], str]:
    """The tagger these benchmarks measure: params.yaml's `model` (random weights) at its train_transfer
    preprocessing, a gallery of random embeddings (20 per class) and params.yaml's tagging score; with
    its class list and a line that says what it is."""
    params = load_params(REPO / "params.yaml")
    spec = for_transfer(params.train_transfer, model=params.model, seed=0, stats={"mean": [0.45] * 3, "std": [0.25] * 3})
    torch.manual_seed(0)
    net = split_at_last_linear(build_model(spec.arch, num_classes=num_classes, pretrained=False).eval())
    tagger = Tagger(net, torch.randn(20 * num_classes, net.last.in_features),
                    torch.arange(num_classes).repeat_interleave(20),
                    score=params.tagging.score, k=params.tagging.neighbours).eval()
    classes = [{"landmark_id": i, "name": f"Landmark {i}"} for i in range(num_classes)]
    return tagger, spec, classes, (f"{spec.arch}, {num_classes} classes, image_size {spec.image_size}, "
                                   f"{params.tagging.score} score")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60, help="timed runs per variant")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tagger, spec, classes, what = bench_tagger()
    pre = spec.preprocess
    print(f"{what}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = [tmp / "predictor.pt", tmp / "predictor.pt2", tmp / "predictor.onnx"]
        photos = [torch.randint(0, 256, (3, PHOTO_SIZE[1], PHOTO_SIZE[0]), dtype=torch.uint8) for _ in range(4)]
        t = time.perf_counter()
        reports = export_predictors(tagger, classes=classes, preprocess=pre, tagging={"threshold": 0.5},
                                    check_images=photos, out_paths=paths)
        print(f"export of the three files, checks included: {time.perf_counter() - t:.0f} s")
        predictors = {p.suffix: load_predictor(p) for p in paths}  # loaded exactly as the command loads them

        x = photos[0].unsqueeze(0)
        with torch.no_grad():
            variants = {"eager tagger": lambda: tagger(preprocess_uint8(x, **pre))}
            variants.update({f"{suffix} ({p.format})": (lambda p=p: p(x)) for suffix, p in predictors.items()})
            for _ in range(20):  # warm-up: TorchScript's profiling executor optimises after a few runs
                for fn in variants.values():
                    fn()
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(max(1, args.runs // 10)):  # interleave, so drift in machine load hits all alike
                for v, fn in variants.items():
                    times[v] += median_ms(fn, 10)
        medians = {v: statistics.median(t) for v, t in times.items()}
        eager = medians["eager tagger"]
        ratio = medians[".pt (torchscript)"] / eager
        print(f"latency, batch 1, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} uint8 photo -> probabilities and score "
              f"({args.runs} runs, median):")
        for v, ms in medians.items():
            report = reports.get(str(tmp / ("predictor" + v.split()[0])))
            extra = "" if report is None else f"   ratio {ms / eager:.3f}   max |diff| {report['max_abs_diff']:.1e}"
            print(f"  {v:<24} {ms:8.2f} ms{extra}")
        print(f"  (limit for TorchScript: ratio {MAX_RATIO})")

        folder = tmp / "photos"
        folder.mkdir()
        make_photos(folder, args.photos)
        photo = next(folder.iterdir())
        print("start-up, a fresh python that loads the file and tags one photo (median of 3):")
        for path in paths:
            runs = [float(subprocess.run([sys.executable, "-c", STARTUP, str(path), str(REPO), str(photo)],
                                         capture_output=True, text=True, check=True).stdout) for _ in range(3)]
            print(f"  {path.suffix:<5} {statistics.median(runs):6.2f} s")
        print(f"tagging a folder of {args.photos} JPEG photos ({PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, 1/4 portrait):")
        for path, batch in [(paths[0], 1), *((p, 8) for p in paths), (paths[0], 32)]:
            t = time.perf_counter()
            code = cli.main(["tag", str(folder), "--model", str(path), "--batch-size", str(batch),
                             "--output", str(tmp / "tags.csv")])
            rate = args.photos / (time.perf_counter() - t)
            print(f"  {path.suffix:<5} --batch-size {batch:<3} {rate:8.1f} images/s   (exit {code})")
    if ratio > MAX_RATIO:
        print(f"FAIL: the TorchScript predictor is {ratio:.3f}x the eager latency (limit {MAX_RATIO})")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
