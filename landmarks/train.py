"""Training: small loop functions, one `fit` that logs through dvclive, resumes and keeps the best model.

Reproducibility rules this module keeps:
- every epoch reseeds torch from (seed, epoch), and the sampler's order is a function of
  (seed, epoch) alone, so a run resumed after SIGKILL replays exactly what an uninterrupted run does;
- the train sampler is always a DistributedSampler (1 replica when not distributed), so N processes
  under torchrun see, batch for batch, the same global batches as one process.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from tqdm import tqdm

from landmarks.checkpoint import make_checkpoint, save_checkpoint
from landmarks.data import LandmarkDataset, known_rows, read_classes, read_split
from landmarks.evaluation import embed_dataset
from landmarks.files import atomic_write_bytes
from landmarks.openset import gallery_record
from landmarks.models import build_model, describe, head_parameters, set_train_mode, split_at_last_linear
from landmarks.transforms import CROP_FRACTION, eval_transform, preprocess_config, train_transform

OPTIMIZERS = ("sgd", "adam", "nadam", "adagrad", "adamw")
SCHEDULERS = ("none", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    """The knobs of one training run (one stage's params, validated)."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    backbone_lr: float | None = None  # None: one learning rate for everything
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 7
    gamma: float = 0.1
    label_smoothing: float = 0.0
    device: str = "auto"
    num_workers: int | str = "auto"
    seed: int = 0
    cache_features: bool = False  # frozen backbone: compute its features once, train only the head

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("scheduler", self.scheduler, SCHEDULERS),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r} is not valid; it must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} is not valid; it must be > 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} is not valid; it must be in [0, 1)")
        if self.num_workers != "auto" and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ValueError(f"num_workers={self.num_workers!r} is not valid; use 'auto' or an integer >= 0")
        # Under torchrun each process takes batch_size // world of every global batch; checked here so a
        # stage stops with one line before any process group, model or data is set up.
        world = int(os.environ.get("WORLD_SIZE", 1))
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not valid; it must be divisible by the number of processes ({world})")


# ----------------------------------------------------------------------------- environment

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
            raise ValueError("device='cuda' was asked for, but CUDA is not available here")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was asked for, but MPS is not available here")
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # else NCCL collectives (barrier) guess GPU 0 on every rank
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_num_workers(value: int | str, device: torch.device) -> int:
    """auto: the CPU decodes JPEGs in parallel with a GPU; on a CPU-only box workers only compete with training."""
    if value != "auto":
        return int(value)
    if device.type == "cpu":
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))))


def make_loader(
    dataset: Dataset, *, batch_size: int, train: bool, seed: int, num_workers: int, device: torch.device,
    rank: int = 0, world_size: int = 1,
) -> DataLoader:
    """A DataLoader tuned for the device. Train loaders shard with DistributedSampler; eval loaders don't."""
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
    )


# ----------------------------------------------------------------------------- optimisation

def param_groups(model: nn.Module, *, lr: float, backbone_lr: float | None) -> list[dict[str, Any]]:
    """Head and backbone get separate learning rates; frozen parameters are left out."""
    head = {id(p) for p in head_parameters(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if backbone_lr is None or not head:
        return [{"params": trainable, "lr": lr}]
    groups = [
        {"params": [p for p in trainable if id(p) in head], "lr": lr, "name": "head"},
        {"params": [p for p in trainable if id(p) not in head], "lr": backbone_lr, "name": "backbone"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict[str, Any]], *, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """One of OPTIMIZERS; each group keeps its own lr."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is not valid; choose one of: {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, name: str, epochs: int, steps_per_epoch: int,
    warmup_epochs: float = 0.0, step_size: int = 7, gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier: `step` decays by gamma every step_size epochs (the original recipe);
    `cosine` warms up linearly for warmup_epochs, then follows a half cosine to zero."""
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if name == "step":
            return gamma ** ((step // steps_per_epoch) // step_size)
        if name == "cosine":
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler={name!r} is not valid; choose one of: {', '.join(SCHEDULERS)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); full precision elsewhere, which keeps CPU runs exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------- loops

def train_one_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module, device: torch.device,
    *, desc: str = "train", show: bool = True,
) -> dict[str, float]:
    """One pass over `loader`; returns mean loss and accuracy over this process's samples."""
    set_train_mode(model)
    channels_last = device.type == "cuda"
    # Running sums stay on the device: reading them every step would stall a GPU's queue.
    sums = torch.zeros(2, dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    seen = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True, mininterval=1.0)
    for step, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast_for(device):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = labels.numel()
        sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == labels).sum().double()]).to(sums.device)
        seen += n
        if show and step % 10 == 0:
            loss_sum, correct = sums.tolist()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    loss_sum, correct = sums.tolist()
    return {"loss": loss_sum / max(1, seen), "acc": correct / max(1, seen)}


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
    *, desc: str = "val", show: bool = True,
) -> dict[str, float]:
    """Mean loss and top-1 accuracy of `model` on `loader`."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast_for(device):
            logits = model(images)
        total_loss += criterion(logits.float(), labels).item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += labels.numel()
    return {"loss": total_loss / max(1, seen), "acc": correct / max(1, seen)}


@torch.no_grad()
def extract_features(model: nn.Module, head: nn.Module, loader: DataLoader, device: torch.device) -> TensorDataset:
    """The inputs `head` receives for every sample of `loader`: the frozen backbone's features, computed once."""
    model.eval()
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].float().cpu()))
    labels: list[torch.Tensor] = []
    try:
        for images, y in tqdm(loader, desc="features", leave=False, dynamic_ncols=True):
            with autocast_for(device):
                model(images.to(device))
            labels.append(y)
    finally:
        hook.remove()
    return TensorDataset(torch.cat(captured), torch.cat(labels))


# ----------------------------------------------------------------------------- fit

def run_fingerprint(config: TrainConfig, extra: dict[str, Any]) -> str:
    """Identifies a run, so a resume state is only ever picked up by the same run."""
    blob = json.dumps({"config": asdict(config), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def fit(
    model: nn.Module,
    *,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    live_dir: str | os.PathLike | None = None,
    resume_path: str | os.PathLike | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    head: nn.Module | None = None,
) -> dict[str, Any]:
    """Train `model` for config.epochs and load its best-validation weights back into it.

    Returns {"best_epoch", "best": val metrics of the best epoch, "history": per-epoch metrics}.
    With `resume_path`, the state after every epoch is kept there, and a rerun of the same run
    (same config and fingerprint_extra) continues after the last completed epoch.
    """
    device = select_device(config.device)
    rank, world = init_distributed(device)
    is_main = rank == 0
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    workers = resolve_num_workers(config.num_workers, device)

    trained: nn.Module = model
    if config.cache_features:
        if head is None:
            raise ValueError("cache_features needs the head module whose inputs are the features")
        # The backbone is frozen, so its features never change: one pass instead of one per epoch.
        eval_loader = lambda ds: make_loader(ds, batch_size=config.batch_size, train=False, seed=config.seed, num_workers=workers, device=device)
        train_set = extract_features(model, head, eval_loader(train_set), device)
        val_set = extract_features(model, head, eval_loader(val_set), device)
        trained, workers = head, 0

    train_loader = make_loader(train_set, batch_size=config.batch_size, train=True, seed=config.seed,
                               num_workers=workers, device=device, rank=rank, world_size=world)
    val_loader = make_loader(val_set, batch_size=config.batch_size, train=False, seed=config.seed,
                             num_workers=workers, device=device)
    # A cached-feature run trains the bare head, which param_groups puts in one group at `lr`.
    groups = param_groups(trained, lr=config.lr, backbone_lr=config.backbone_lr)
    optimizer = build_optimizer(groups, name=config.optimizer, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = build_scheduler(optimizer, name=config.scheduler, epochs=config.epochs, steps_per_epoch=len(train_loader),
                                warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    ddp_model = trained
    if world > 1:
        if device.type == "cuda":
            # Batch norm over the global batch, as one process computes it (SyncBatchNorm needs CUDA).
            trained = nn.SyncBatchNorm.convert_sync_batchnorm(trained)
        ddp_model = nn.parallel.DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)

    fingerprint = run_fingerprint(config, {**(fingerprint_extra or {}), "world": world})
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": -1, "acc": -1.0, "state": None}
    start = 0
    resume = Path(resume_path) if resume_path else None
    if resume and resume.exists():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            trained.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, best, start = state["history"], state["best"], state["epoch"]
            if is_main:
                tqdm.write(f"resuming after epoch {start} from {resume}")

    live = _open_live(live_dir) if is_main and live_dir else None
    if live is not None:
        for record in history:  # DVC cleared the stage's outputs; replay what earlier attempts logged
            _log_epoch(live, record)

    for epoch in range(start, config.epochs):
        torch.manual_seed(config.seed * 100_003 + epoch)  # augmentation and dropout depend on (seed, epoch) only
        train_loader.sampler.set_epoch(epoch)
        train = train_one_epoch(ddp_model, train_loader, optimizer, scheduler, criterion, device,
                                desc=f"epoch {epoch + 1}/{config.epochs}", show=is_main)
        train = _all_reduce_mean(train, len(train_loader.sampler), device) if world > 1 else train
        val = evaluate(trained, val_loader, criterion, device, show=is_main)
        record = {"epoch": epoch + 1, "train/loss": train["loss"], "train/acc": train["acc"],
                  "val/loss": val["loss"], "val/acc": val["acc"], "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if val["acc"] > best["acc"]:
            best = {"epoch": epoch + 1, "acc": val["acc"], "loss": val["loss"],
                    "state": {k: v.detach().cpu().clone() for k, v in trained.state_dict().items()}}
        if is_main:
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if live is not None:
                _log_epoch(live, record)
            if resume:
                _save_state(resume, {"fingerprint": fingerprint, "epoch": epoch + 1, "model": trained.state_dict(),
                                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "history": history, "best": best})

    trained.load_state_dict(best["state"])
    cached = {"train_features": train_set} if config.cache_features else {}
    if live is not None:
        live.summary["best"] = {"epoch": best["epoch"], "val_acc": best["acc"], "val_loss": best["loss"]}
        live.end()
    if is_main and resume:
        resume.unlink(missing_ok=True)  # the run is complete; a later run starts fresh
    return {"best_epoch": best["epoch"], "best": {"acc": best["acc"], "loss": best["loss"]}, "history": history,
            "rank": rank, "world_size": world, **cached}


def _all_reduce_mean(metrics: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    """Average per-process epoch metrics into the global ones (equal shard sizes under DistributedSampler)."""
    t = torch.tensor([metrics["loss"], metrics["acc"]], dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {"loss": t[0].item(), "acc": t[1].item()}


def _open_live(live_dir: str | os.PathLike):
    from dvclive import Live

    # The pipeline's dvc.yaml declares these metrics and plots itself, so dvclive must not write a dvc.yaml.
    return Live(str(live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)


def _log_epoch(live: Any, record: dict[str, float]) -> None:
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


# ----------------------------------------------------------------------------- the stages' entry point

def file_digest(*paths: str | os.PathLike) -> str:
    """sha256 over files' bytes: ties a resume state to the exact data it was trained on."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def train_classifier(
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    splits_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    mean: list[float],
    std: list[float],
    image_size: int,
    augment: str,
    config: TrainConfig,
    out_path: str | os.PathLike,
    crop_fraction: float = CROP_FRACTION,
    live_dir: str | os.PathLike | None = None,
    resume_path: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `arch` on the split CSVs and save a self-describing checkpoint of the best epoch."""
    classes = read_classes(splits_dir)
    class_ids = [c["landmark_id"] for c in classes]
    preprocess = preprocess_config(image_size=image_size, mean=mean, std=std, crop_fraction=crop_fraction)
    # Cached features are computed once, so they come from un-augmented images.
    augment_used = "none" if config.cache_features else augment
    # Distractors (no landmark) are for choosing and measuring the tagging threshold, not for training.
    train_rows, val_rows = (known_rows(read_split(splits_dir, name)) for name in ("train", "val"))
    train_set = LandmarkDataset(train_rows, images_dir, class_ids, train_transform(**preprocess, augment=augment_used))
    val_set = LandmarkDataset(val_rows, images_dir, class_ids, eval_transform(**preprocess))
    torch.manual_seed(config.seed)  # the fresh head's (and a scratch model's) initial weights
    model = build_model(arch, num_classes=len(classes), **arch_kwargs)
    head_name = getattr(model, "landmark_head_name", None)
    tqdm.write(f"{arch}: {len(classes)} classes, {len(train_set)} train / {len(val_set)} val images, {describe(model)}")
    split_files = [Path(splits_dir) / f for f in ("train.csv", "val.csv", "classes.csv")]
    result = fit(
        model, train_set=train_set, val_set=val_set, config=config, live_dir=live_dir, resume_path=resume_path,
        fingerprint_extra={"arch": arch, "arch_kwargs": arch_kwargs, "augment": augment_used,
                           "preprocess": preprocess, "data": file_digest(*split_files)},
        head=model.get_submodule(head_name) if head_name else None,
    )
    if result["rank"] == 0:
        gallery = training_gallery(model, result, train_rows, images_dir, class_ids, preprocess, config)
        ckpt = make_checkpoint(
            model, arch=arch, arch_kwargs=arch_kwargs, classes=classes, preprocess=preprocess,
            params={**(params or {}), "augment": augment_used},
            metrics={"best_epoch": result["best_epoch"], "val_acc": result["best"]["acc"], "val_loss": result["best"]["loss"]},
            gallery=gallery,
        )
        save_checkpoint(out_path, ckpt)
    if dist.is_initialized():
        dist.barrier()  # no rank exits (and lets torchrun tear the group down) before the checkpoint is written
        dist.destroy_process_group()
    return result


def training_gallery(
    model: nn.Module, result: dict[str, Any], train_rows: Any, images_dir: str | os.PathLike, class_ids: list[int],
    preprocess: dict[str, Any], config: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The embeddings of the (un-augmented) training photos that the knn open-set score compares with.

    A cached-feature run already computed them: they are exactly the head's inputs.
    """
    cached = result.get("train_features")
    if cached is not None:
        features, labels = cached.tensors
        return gallery_record(features, labels)
    device = select_device(config.device)
    dataset = LandmarkDataset(train_rows, images_dir, class_ids, eval_transform(**preprocess))
    loader = make_loader(dataset, batch_size=config.batch_size, train=False, seed=config.seed,
                         num_workers=resolve_num_workers(config.num_workers, device), device=device)
    _, embeddings = embed_dataset(split_at_last_linear(model), loader, device, desc="gallery")
    return gallery_record(torch.from_numpy(embeddings), torch.tensor(dataset.labels))
