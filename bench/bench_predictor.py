"""Benchmark the exported predictor.

1. Per-image latency (batch 1) of the TorchScript predictor and of the eager tagger on the same
   input, preprocessing included (uint8 photo -> probabilities and open-set score), after a
   warm-up: the median of many interleaved runs. The predictor must not be slower than the eager
   model by more than 5%.
2. Folder tagging rate (images/s) of `landmarks tag` over ~200 generated photos, batched by size
   (the default) and one image per forward pass, to justify the batching.

Model: params.yaml's `model` (random weights) at its train_transfer preprocessing, with a gallery of
random training embeddings (20 per class) and params.yaml's tagging score.
Exit status 1 if the latency ratio is above the limit.
"""
from __future__ import annotations

import argparse
import statistics
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
from landmarks.export import build_predictor  # noqa: E402
from landmarks.models import build_model, split_at_last_linear  # noqa: E402
from landmarks.openset import Tagger  # noqa: E402
from landmarks.params import load_params  # noqa: E402
from landmarks.predictor_file import load_predictor, predictor_bytes  # noqa: E402
from landmarks.train_spec import for_transfer  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60, help="timed runs per variant")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    spec = for_transfer(params.train_transfer, model=params.model, seed=0, stats={"mean": [0.45] * 3, "std": [0.25] * 3})
    pre = spec.preprocess
    print(f"{spec.arch}, {NUM_CLASSES} classes, image_size {spec.image_size}, {params.tagging.score} score, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    torch.manual_seed(0)
    model = build_model(spec.arch, num_classes=NUM_CLASSES, pretrained=False).eval()
    net = split_at_last_linear(model)
    dim = net.last.in_features
    tagger = Tagger(net, torch.randn(20 * NUM_CLASSES, dim), torch.arange(NUM_CLASSES).repeat_interleave(20),
                    score=params.tagging.score, k=params.tagging.neighbours).eval()
    classes = [{"landmark_id": i, "name": f"Landmark {i}"} for i in range(NUM_CLASSES)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "predictor.pt"
        path.write_bytes(predictor_bytes(build_predictor(tagger, pre), classes=classes, tagging={"threshold": 0.5},
                                         preprocess=pre))
        predictor = load_predictor(path).module  # loaded exactly as the command loads it

        x = torch.randint(0, 256, (1, 3, PHOTO_SIZE[1], PHOTO_SIZE[0]), dtype=torch.uint8)
        with torch.no_grad():
            def eager() -> tuple[torch.Tensor, torch.Tensor]:
                return tagger(preprocess_uint8(x, **pre))

            def scripted() -> tuple[torch.Tensor, torch.Tensor]:
                return predictor.tag(x)

            diff = max((a - b).abs().max().item() for a, b in zip(eager(), scripted()))
            for _ in range(20):  # warm-up: TorchScript's profiling executor optimises after a few runs
                eager(), scripted()
            t_eager, t_script = [], []
            for _ in range(args.runs // 10):  # interleave, so drift in machine load hits both alike
                t_eager += median_ms(eager, 10)
                t_script += median_ms(scripted, 10)
        me, ms = statistics.median(t_eager), statistics.median(t_script)
        ratio = ms / me
        print(f"latency, batch 1, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} uint8 photo -> probabilities and score "
              f"({args.runs} runs, median):")
        print(f"  eager model  {me:8.2f} ms")
        print(f"  TorchScript  {ms:8.2f} ms   ratio {ratio:.3f} (limit {MAX_RATIO})   max |diff| {diff:.1e}")

        folder = tmp / "photos"
        folder.mkdir()
        make_photos(folder, args.photos)
        print(f"tagging a folder of {args.photos} JPEG photos ({PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, 1/4 portrait):")
        for batch in (1, 8, 32):
            t = time.perf_counter()
            code = cli.main(["tag", str(folder), "--model", str(path), "--batch-size", str(batch),
                             "--output", str(tmp / "tags.csv")])
            rate = args.photos / (time.perf_counter() - t)
            print(f"  --batch-size {batch:<3} {rate:8.1f} images/s   (exit {code})")
    if ratio > MAX_RATIO:
        print(f"FAIL: the predictor is {ratio:.3f}x the eager latency (limit {MAX_RATIO})")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
