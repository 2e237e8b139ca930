"""Where training runs: the device, the torchrun process group, data loaders and mixed precision."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate


def select_device(name: str = "auto") -> torch.device:
    """auto picks CUDA (this process's local rank under torchrun), then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' is not valid; CUDA is not available here")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' is not valid; MPS is not available here")
    return torch.device(name)


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[int, int]]:
    """Join the torchrun process group if launched by torchrun, for the duration of the block; yields
    (rank, world_size). On leaving, every rank waits for the others (so none exits, and lets torchrun
    tear the group down, while rank 0 still writes the checkpoint) and the group is destroyed."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # else NCCL collectives (barrier) guess GPU 0 on every rank
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if joined:
            dist.barrier()
    finally:
        if joined:
            dist.destroy_process_group()


def all_reduce_mean(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average per-process epoch metrics into the global ones (equal shard sizes under DistributedSampler)."""
    t = torch.tensor([metrics["loss"], metrics["acc"]], dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {"loss": t[0].item(), "acc": t[1].item()}


def resolve_num_workers(value: int | str, device: torch.device) -> int:
    """auto: on a GPU machine one decoding worker per core this process may use (cores shared among the
    torchrun processes of the node), one core left for the training loop; on a CPU-only machine none,
    as workers would only compete with the training step for the cores."""
    if value != "auto":
        return int(value)
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))) - 1)


class BatchTransform:
    """A collate function that applies a batch transform to the images of the collated batch (picklable,
    so the loader's worker processes can run it)."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, samples: list) -> list:
        images, *rest = default_collate(samples)
        return [self.transform(images), *rest]


def make_loader(
    dataset: Dataset, *, batch_size: int, train: bool, seed: int, num_workers: int, device: torch.device,
    rank: int = 0, world_size: int = 1, batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> DataLoader:
    """A DataLoader tuned for the device. Train loaders shard with DistributedSampler; eval loaders don't.

    `batch_transform` runs on each collated batch inside the loader (its workers, if any): the way to
    augment on a CPU device, where worker processes scale better than intra-op threads."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed) if train else None
    if train and batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world_size})")
    return DataLoader(
        dataset,
        batch_size=batch_size // world_size if train else batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        drop_last=False,
        collate_fn=BatchTransform(batch_transform) if batch_transform is not None else None,
    )


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); full precision elsewhere, which keeps CPU runs exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
