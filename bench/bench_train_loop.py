"""Training throughput of our loop (`train_one_epoch`) against a bare PyTorch loop.

Both loops train the same model with the same optimiser, scheduler, criterion and the same real
DataLoader (`make_loader`) over a real LandmarkDataset of generated JPEGs, using the train_scratch
settings from params.yaml (arch, image size, augmentation, batch size, optimiser, workers). Ours adds
exactly what it has in the pipeline: the tqdm bar with running loss/accuracy, and the metrics.
The bare loop is forward, loss, backward, step, scheduler step: no bar, no metrics, no .item().

One measurement is one epoch; the two loops alternate (ABBA order, so a drift in machine speed
hits both alike) after one warm-up epoch each, and the medians are compared.
Target: ours / bare >= 0.95.   Run from the repo root: `python bench/bench_train_loop.py`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from landmarks.data import LandmarkDataset, read_classes  # noqa: E402
from landmarks.models import build_model  # noqa: E402
from landmarks.devices import autocast_for, make_loader, resolve_num_workers, select_device  # noqa: E402
from landmarks.optim import build_optimizer, build_scheduler, param_groups  # noqa: E402
from landmarks.params import load_params  # noqa: E402
from landmarks.train import train_one_epoch  # noqa: E402
from landmarks.train_spec import for_scratch  # noqa: E402
from landmarks.transforms import train_inputs  # noqa: E402
from tests.conftest import make_image_tree  # noqa: E402

STORED_SIZE = 320  # params download.image_size: the shorter side of every stored image


def bare_epoch(model: nn.Module, loader, optimizer, scheduler, criterion: nn.Module, device: torch.device, prepare) -> None:
    """The minimal loop a PyTorch tutorial would write; nothing leaves the device."""
    model.train()
    channels_last = device.type == "cuda"
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast_for(device):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(), including the device finishing its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images in the generated train set (one epoch)")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds; each times both loops twice")
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    config = for_scratch(params.train_scratch, seed=params.seed, stats={"mean": [0.45] * 3, "std": [0.25] * 3})
    device = select_device(config.device)
    workers = resolve_num_workers(config.num_workers, device)
    num_classes = 12

    with tempfile.TemporaryDirectory() as tmp:
        tree = make_image_tree(Path(tmp), num_classes=num_classes, per_class=-(-args.images // num_classes), size=STORED_SIZE)
        frame = pd.read_csv(tree["selected"], dtype={"id": str}).head(args.images)
        class_ids = [c["landmark_id"] for c in read_classes(tree["classes"].parent)]
        worker_transform, prepare = train_inputs(**config.preprocess, augment=config.augment)
        dataset = LandmarkDataset(frame, tree["images"], class_ids, worker_transform)
        loader = make_loader(dataset, batch_size=config.batch_size, train=True, seed=config.seed,
                             num_workers=workers, device=device)

        torch.manual_seed(config.seed)
        model = build_model(config.arch, num_classes=num_classes, **config.arch_kwargs).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(param_groups(model, lr=config.lr, backbone_lr=config.backbone_lr), name=config.optimizer,
                                    lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        # A long schedule, so the learning rate stays sensible however many epochs the bench runs.
        scheduler = build_scheduler(optimizer, name=config.scheduler, epochs=1000, steps_per_epoch=len(loader),
                                    warmup_epochs=config.warmup_epochs)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        loops = {
            "ours": lambda: train_one_epoch(model, loader, optimizer, scheduler, criterion, device, prepare=prepare,
                                            desc="ours", show=True),
            "bare": lambda: bare_epoch(model, loader, optimizer, scheduler, criterion, device, prepare),
        }
        print(f"{config.arch} at {config.image_size} px, augment={config.augment}, batch {config.batch_size}, "
              f"{config.optimizer}/{config.scheduler}, {workers} loader workers, {torch.get_num_threads()} threads, "
              f"device {device}; {len(dataset)} generated {STORED_SIZE}px JPEGs = {len(loader)} steps per epoch", flush=True)
        for name, fn in loops.items():  # warm-up: allocator, kernels, page cache
            timed(fn, device)
        wall: dict[str, list[float]] = {"ours": [], "bare": []}
        cpu: dict[str, list[float]] = {"ours": [], "bare": []}
        for r in range(args.rounds):
            order = ("ours", "bare", "bare", "ours") if r % 2 == 0 else ("bare", "ours", "ours", "bare")
            for name in order:
                w, c = timed(loops[name], device)
                wall[name].append(len(dataset) / w)
                cpu[name].append(len(dataset) / c)
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {statistics.median(v):.2f} img/s" for n, v in wall.items()),
                  file=sys.stderr, flush=True)

    # Paired ratios: the two runs of a loop in one ABBA round against the other loop's two, so a
    # change in machine load between rounds cancels out.
    paired = [statistics.fmean(wall["ours"][2 * r: 2 * r + 2]) / statistics.fmean(wall["bare"][2 * r: 2 * r + 2])
              for r in range(args.rounds)]
    for name in ("ours", "bare"):
        print(f"{name} images/s per epoch (wall clock): {' '.join(f'{x:.2f}' for x in wall[name])}")
    ours, bare = (statistics.median(wall[n]) for n in ("ours", "bare"))
    ours_cpu, bare_cpu = (statistics.median(cpu[n]) for n in ("ours", "bare"))
    print(f"paired ours/bare ratio per ABBA round: {' '.join(f'{x:.3f}' for x in paired)} (median {statistics.median(paired):.3f})")
    print(f"CPU time of this process (less sensitive to other processes' load): ours {ours_cpu:.2f} img/CPU-s, bare {bare_cpu:.2f} img/CPU-s, "
          f"ratio {ours_cpu / bare_cpu:.3f}")
    print(f"train_one_epoch (tqdm bar + metrics): {ours:.2f} images/s (median of {len(wall['ours'])} epochs, wall clock)")
    print(f"bare PyTorch loop:                    {bare:.2f} images/s (median of {len(wall['bare'])} epochs, wall clock)")
    print(f"ratio ours/bare: {ours / bare:.3f}  (target >= 0.95: {'met' if ours / bare >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    main()
