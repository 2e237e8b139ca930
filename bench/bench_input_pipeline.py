"""Does the input pipeline keep the training device busy? Loader alone, training step alone, and both.

Renders a synthetic landmark set at the stored size (320 px, as `download` stores photos), then
measures on one device, in one run:
  loader       the real training input path: LandmarkDataset + make_loader workers decoding and
               cropping to uint8, the batch moved to the device and augmented there (train_inputs);
  step         the training step alone (forward, backward, optimiser) on batches already on the device;
  epoch        train_one_epoch with both, as training runs it;
  old          (CPU, for comparison) the previous path: PIL decode + torchvision's PIL augmentation per photo;
and ends with `ratio epoch/step-only: X` (1.0: the device never waits for data).

    python bench/bench_input_pipeline.py --device cpu --images 512
    python bench/bench_input_pipeline.py --device cuda --images 15120 --batch-size 256 --image-size 224
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landmarks.data import LandmarkDataset  # noqa: E402
from landmarks.devices import make_loader, resolve_num_workers, select_device  # noqa: E402
from landmarks.imageio import decode_image  # noqa: E402
from landmarks.models import build_model  # noqa: E402
from landmarks.optim import build_optimizer, build_scheduler, param_groups  # noqa: E402
from landmarks.synthetic import generate_dataset  # noqa: E402
from landmarks.train import train_one_epoch  # noqa: E402
from landmarks.transforms import preprocess_config, train_inputs  # noqa: E402

from bench_train_loop import bare_epoch  # noqa: E402  (bench/ is on sys.path when run as a script)

STORED_SIZE = 320
MEAN, STD = [0.5] * 3, [0.5] * 3


def render(root: Path, images: int) -> tuple[pd.DataFrame, list[int]]:
    """18 synthetic landmarks at the stored size, laid out as data/images/<landmark_id>/<id>.jpg."""
    per_class = math.ceil(images / 18)
    train, _, _ = generate_dataset(root / "raw", num_classes=18, images_per_class=per_class, image_size=STORED_SIZE,
                                   seed=0, distractor_fraction=0.0, workers=os.cpu_count() or 2)
    train = train.head(images)
    for image_id, url, lid in zip(train["id"], train["url"], train["landmark_id"]):
        target = root / "images" / str(lid) / f"{image_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(url.removeprefix("file://")))
    return train[["id", "landmark_id"]], sorted(set(train["landmark_id"]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_alone(loader, prepare, device: torch.device) -> tuple[float, float, float]:
    """(images/s and images per CPU-second of this process after the first batch, seconds to the first
    batch) of the input path, batches moved to and augmented on the device (CPU-seconds: without workers)."""
    start, first, n = time.perf_counter(), None, 0
    for images, _ in loader:
        x = images.to(device, non_blocking=True)
        x = prepare(x) if prepare is not None else x
        if first is None:  # start-up (worker spawn, first batch) is reported apart from the steady rate
            sync(device)
            first, start, cpu = time.perf_counter() - start, time.perf_counter(), cpu_seconds()
            continue
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - start), n / (cpu_seconds() - cpu), first or 0.0


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers, once they exit)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def step_alone(model, optimizer, scheduler, criterion, device, batch: int, size: int, steps: int) -> float:
    """images/s of the training step on random batches already on the device (after 3 warm-up steps):
    bench_train_loop's bare loop over the same batch again and again."""
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":  # as bare_epoch converts it, so that the conversion is not timed
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 18, (batch,), device=device)
    bare_epoch(model, [(x, y)] * 3, optimizer, scheduler, criterion, device, None)
    sync(device)
    start = time.perf_counter()
    bare_epoch(model, [(x, y)] * steps, optimizer, scheduler, criterion, device, None)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def old_path(frame: pd.DataFrame, root: Path, size: int, count: int) -> float:
    """images/s of the previous training input path (PIL decode + PIL augmentation per photo, one process)."""
    from torchvision import transforms as T

    t = T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), T.ColorJitter(0.3, 0.3, 0.3, 0.05),
                   T.RandAugment(num_ops=2, magnitude=9), T.ToTensor(), T.Normalize(MEAN, STD)])
    paths = [root / "images" / str(lid) / f"{iid}.jpg" for lid, iid in zip(frame["landmark_id"], frame["id"])][:count]
    start = time.perf_counter()
    for p in paths:
        t(decode_image(p))
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--augment", default="strong", choices=("paper", "strong"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()

    device = select_device(args.device)
    workers = resolve_num_workers(args.workers if args.workers == "auto" else int(args.workers), device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        frame, class_ids = render(root, args.images)
        print(f"rendered {len(frame)} {STORED_SIZE}px JPEGs in {time.perf_counter() - t0:.1f} s; device {device}, "
              f"{workers} loader workers, {cores} cores, {torch.get_num_threads()} threads, batch {args.batch_size}, "
              f"{args.image_size} px, augment={args.augment}, {args.model}", flush=True)
        pre = preprocess_config(image_size=args.image_size, mean=MEAN, std=STD)
        worker, prepare = train_inputs(**pre, augment=args.augment)
        dataset = LandmarkDataset(frame, root / "images", class_ids, worker)
        # as training does it: augmentation batched on a GPU, in the loader's workers on a CPU
        in_loader, prepare = (prepare, None) if device.type == "cpu" else (None, prepare)
        loader = make_loader(dataset, batch_size=args.batch_size, train=True, seed=0, num_workers=workers, device=device,
                             batch_transform=in_loader)

        torch.manual_seed(0)
        model = build_model(args.model, num_classes=len(class_ids), pretrained=False).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if args.compile else model
        optimizer = build_optimizer(param_groups(model, lr=1e-3, backbone_lr=None), name="adamw", lr=1e-3, momentum=0.9,
                                    weight_decay=0.01)
        scheduler = build_scheduler(optimizer, name="none", epochs=1, steps_per_epoch=1)
        criterion = nn.CrossEntropyLoss()

        loader_rate, per_cpu_s, first_batch = loader_alone(loader, prepare, device)
        per_core = loader_rate / max(1, min(cores, workers)) if workers else per_cpu_s
        print(f"loader alone: {loader_rate:.0f} images/s, {per_core:.0f} per core ({workers} workers on {cores} cores); "
              f"first batch after {first_batch:.2f} s (worker start-up)", flush=True)
        t0 = time.perf_counter()
        steps = min(50, len(loader)) if device.type == "cuda" else 3
        step_rate = step_alone(net, optimizer, scheduler, criterion, device, args.batch_size, args.image_size, steps)
        print(f"step alone: {step_rate:.0f} images/s (first steps, compile and autotune included: "
              f"{time.perf_counter() - t0:.1f} s in all)", flush=True)
        start = time.perf_counter()
        train_one_epoch(net, loader, optimizer, scheduler, criterion, device, prepare=prepare, show=False)
        sync(device)
        epoch_s = time.perf_counter() - start
        epoch_rate = len(dataset) / epoch_s
        print(f"train_one_epoch: {len(dataset)} images in {epoch_s:.2f} s = {epoch_rate:.0f} images/s", flush=True)
        if device.type == "cpu":
            old = old_path(frame, root, args.image_size, min(len(frame), 128))
            print(f"previous input path (PIL decode + PIL augmentation, one process): {old:.0f} images/s per core; "
                  f"now {per_core:.0f} per core: {per_core / old:.2f}x")
    print(f"ratio epoch/step-only: {epoch_rate / step_rate:.3f}")


if __name__ == "__main__":
    main()
