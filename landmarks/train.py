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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from landmarks.checkpoint import make_checkpoint, save_checkpoint
from landmarks.data import LandmarkDataset, known_rows, read_classes, read_split
from landmarks.devices import all_reduce_mean, autocast_for, make_loader, process_group, resolve_num_workers, select_device
from landmarks.evaluation import embed_dataset
from landmarks.files import atomic_write_bytes
from landmarks.models import build_model, describe, set_train_mode, split_at_last_linear
from landmarks.openset import gallery_record
from landmarks.optim import build_optimizer, build_scheduler, param_groups
from landmarks.train_spec import TrainSpec
from landmarks.transforms import eval_transform, train_inputs


# ----------------------------------------------------------------------------- loops

def train_one_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module, device: torch.device,
    *, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None, desc: str = "train", show: bool = True,
) -> dict[str, float]:
    """One pass over `loader`; returns mean loss and accuracy over this process's samples.

    `prepare` turns a batch, once on the device, into the model's input (augmentation and
    normalisation of uint8 crops); without it the loader's batches are the input."""
    set_train_mode(model)
    channels_last = device.type == "cuda"
    # Running sums stay on the device: reading them every step would stall a GPU's queue.
    sums = torch.zeros(2, dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    seen = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True, mininterval=1.0)
    for step, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
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

@dataclass
class Run:
    """Everything one fit works with, built once."""

    device: torch.device
    rank: int
    world: int
    trained: nn.Module  # the model, or only its head when features are cached
    ddp_model: nn.Module  # what the training step calls (trained, wrapped by DDP under torchrun)
    prepare: Callable[[torch.Tensor], torch.Tensor] | None  # the batch transform on the device
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    train_features: TensorDataset | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def build_run(model: nn.Module, head: nn.Module | None, train_set: Dataset, val_set: Dataset, spec: TrainSpec,
              device: torch.device, rank: int, world: int,
              prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Run:
    """Move the model to the device, cache frozen features if asked, make loaders, optimiser and schedule."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    workers = resolve_num_workers(spec.num_workers, device)
    trained, features = model, None
    if spec.cache_features:
        if head is None:
            raise ValueError("cache_features needs the head module whose inputs are the features")
        # The backbone is frozen, so its features never change: one pass instead of one per epoch.
        loader = lambda ds: make_loader(ds, batch_size=spec.batch_size, train=False, seed=spec.seed, num_workers=workers, device=device)
        train_set = features = extract_features(model, head, loader(train_set), device)
        val_set = extract_features(model, head, loader(val_set), device)
        trained, workers = head, 0
    # Augmentation runs where it is cheapest: batched on a GPU, in the loader (and its workers) on a CPU.
    in_loader = prepare if device.type == "cpu" else None
    prepare = None if device.type == "cpu" else prepare
    train_loader = make_loader(train_set, batch_size=spec.batch_size, train=True, seed=spec.seed, num_workers=workers,
                               device=device, rank=rank, world_size=world, batch_transform=in_loader)
    val_loader = make_loader(val_set, batch_size=spec.batch_size, train=False, seed=spec.seed, num_workers=workers, device=device)
    # A cached-feature run trains the bare head, which param_groups puts in one group at `lr`.
    groups = param_groups(trained, lr=spec.lr, backbone_lr=spec.backbone_lr)
    optimizer = build_optimizer(groups, name=spec.optimizer, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    scheduler = build_scheduler(optimizer, name=spec.scheduler, epochs=spec.epochs, steps_per_epoch=len(train_loader),
                                warmup_epochs=spec.warmup_epochs, step_size=spec.step_size, gamma=spec.gamma)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: autotune the convolutions once
    ddp_model = torch.compile(trained) if spec.compile and not spec.cache_features else trained
    if world > 1:
        if device.type == "cuda":
            # Batch norm over the global batch, as one process computes it (SyncBatchNorm needs CUDA).
            trained = nn.SyncBatchNorm.convert_sync_batchnorm(trained)
        ddp_model = nn.parallel.DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)
        ddp_model = torch.compile(ddp_model) if spec.compile and not spec.cache_features else ddp_model
    return Run(device, rank, world, trained, ddp_model, prepare, train_loader, val_loader, optimizer, scheduler,
               nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing), features)


def restore(run: Run, resume: Path | None, fingerprint: str) -> tuple[list[dict[str, float]], dict[str, Any], int]:
    """(history, best, epochs done) from the resume state of this very run, or a fresh start."""
    fresh: tuple[list[dict[str, float]], dict[str, Any], int] = ([], {"epoch": -1, "acc": -1.0, "state": None}, 0)
    if not resume or not resume.exists():
        return fresh
    # weights_only: a state file is data; loading it must never run code.
    state = torch.load(resume, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        return fresh
    run.trained.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.is_main:
        tqdm.write(f"resuming after epoch {state['epoch']} from {resume}")
    return state["history"], state["best"], state["epoch"]


def save_state(path: Path, run: Run, fingerprint: str, epoch: int, history: list[dict[str, float]], best: dict[str, Any]) -> None:
    """The state after `epoch`, written atomically: tensors and plain types only."""
    buf = io.BytesIO()
    torch.save({"fingerprint": fingerprint, "epoch": epoch, "model": run.trained.state_dict(),
                "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "history": history, "best": best}, buf)
    atomic_write_bytes(path, buf.getvalue())


def epoch_loop(run: Run, spec: TrainSpec, *, fingerprint: str, live: Any, resume: Path | None) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train the remaining epochs; returns the history and the best epoch (with its weights)."""
    history, best, start = restore(run, resume, fingerprint)
    for record in history if live is not None else []:  # DVC cleared the stage's outputs; replay earlier attempts
        _log_epoch(live, record)
    for epoch in range(start, spec.epochs):
        torch.manual_seed(spec.seed * 100_003 + epoch)  # augmentation and dropout depend on (seed, epoch) only
        run.train_loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train = train_one_epoch(run.ddp_model, run.train_loader, run.optimizer, run.scheduler, run.criterion, run.device,
                                prepare=run.prepare, desc=f"epoch {epoch + 1}/{spec.epochs}", show=run.is_main)
        train = all_reduce_mean(train, run.device) if run.world > 1 else train
        val = evaluate(run.trained, run.val_loader, run.criterion, run.device, show=run.is_main)
        record = {"epoch": epoch + 1, "train/loss": train["loss"], "train/acc": train["acc"],
                  "val/loss": val["loss"], "val/acc": val["acc"], "lr": run.optimizer.param_groups[0]["lr"]}
        history.append(record)
        if val["acc"] > best["acc"]:
            best = {"epoch": epoch + 1, "acc": val["acc"], "loss": val["loss"],
                    "state": {k: v.detach().cpu().clone() for k, v in run.trained.state_dict().items()}}
        if run.is_main:  # the time is printed, not logged: metrics must not depend on the machine's load
            seconds = time.perf_counter() - started
            tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
                       + f" ({seconds:.1f} s, {len(run.train_loader.sampler) * run.world / seconds:.0f} images/s)")
            if live is not None:
                _log_epoch(live, record)
            if resume:
                save_state(resume, run, fingerprint, epoch + 1, history, best)
    return history, best


def fit(model: nn.Module, *, train_set: Dataset, val_set: Dataset, spec: TrainSpec, device: torch.device, rank: int = 0,
        world: int = 1, head: nn.Module | None = None, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        live_dir: str | os.PathLike | None = None, resume_path: str | os.PathLike | None = None,
        fingerprint: str = "") -> dict[str, Any]:
    """Train `model` for spec.epochs and load its best-validation weights back into it.

    Returns {"best_epoch", "best": val metrics of the best epoch, "history": per-epoch metrics,
    "train_features": the cached features, if any}. With `resume_path`, the state after every epoch
    is kept there, and a rerun with the same fingerprint continues after the last completed epoch.
    """
    run = build_run(model, head, train_set, val_set, spec, device, rank, world, prepare)
    live = _open_live(live_dir) if run.is_main and live_dir else None
    resume = Path(resume_path) if resume_path else None
    history, best = epoch_loop(run, spec, fingerprint=f"{fingerprint}/world={world}", live=live, resume=resume)
    run.trained.load_state_dict(best["state"])
    if live is not None:
        live.summary["best"] = {"epoch": best["epoch"], "val_acc": best["acc"], "val_loss": best["loss"]}
        live.end()
    if run.is_main and resume:
        resume.unlink(missing_ok=True)  # the run is complete; a later run starts fresh
    return {"best_epoch": best["epoch"], "best": {"acc": best["acc"], "loss": best["loss"]}, "history": history,
            "train_features": run.train_features}


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


def train_classifier(spec: TrainSpec, *, splits_dir: str | os.PathLike, images_dir: str | os.PathLike,
                     out_path: str | os.PathLike, live_dir: str | os.PathLike | None = None,
                     resume_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train `spec` on the split CSVs and save a self-describing checkpoint of the best epoch."""
    classes = read_classes(splits_dir)
    class_ids = [c["landmark_id"] for c in classes]
    pre = spec.preprocess
    # Distractors (no landmark) are for choosing and measuring the tagging threshold, not for training.
    train_rows, val_rows = (known_rows(read_split(splits_dir, name)) for name in ("train", "val"))
    worker_transform, prepare = train_inputs(**pre, augment=spec.augment_used)
    train_set = LandmarkDataset(train_rows, images_dir, class_ids, worker_transform)
    val_set = LandmarkDataset(val_rows, images_dir, class_ids, eval_transform(**pre))
    torch.manual_seed(spec.seed)  # the fresh head's (and a scratch model's) initial weights
    model = build_model(spec.arch, num_classes=len(classes), **spec.arch_kwargs)
    head_name = getattr(model, "landmark_head_name", None)
    tqdm.write(f"{spec.arch}: {len(classes)} classes, {len(train_set)} train / {len(val_set)} val images, {describe(model)}")
    data = file_digest(*(Path(splits_dir) / f for f in ("train.csv", "val.csv", "classes.csv")))
    device = select_device(spec.device)
    with process_group(device) as (rank, world):
        result = fit(model, train_set=train_set, val_set=val_set, spec=spec, device=device, rank=rank, world=world,
                     head=model.get_submodule(head_name) if head_name else None, prepare=prepare, live_dir=live_dir,
                     resume_path=resume_path, fingerprint=spec.fingerprint(data=data))
        if rank == 0:
            gallery = training_gallery(model, result["train_features"], train_rows, images_dir, class_ids, spec, device)
            save_checkpoint(out_path, make_checkpoint(
                model, arch=spec.arch, arch_kwargs=spec.arch_kwargs, classes=classes, preprocess=pre, params=spec.record(),
                metrics={"best_epoch": result["best_epoch"], "val_acc": result["best"]["acc"], "val_loss": result["best"]["loss"]},
                gallery=gallery))
    return {**result, "rank": rank, "world_size": world}


def training_gallery(model: nn.Module, features: TensorDataset | None, train_rows: Any, images_dir: str | os.PathLike,
                     class_ids: list[int], spec: TrainSpec, device: torch.device) -> dict[str, torch.Tensor]:
    """The embeddings of the (un-augmented) training photos that the knn open-set score compares with.

    A cached-feature run already computed them: they are exactly the head's inputs.
    """
    if features is not None:
        return gallery_record(*features.tensors)
    dataset = LandmarkDataset(train_rows, images_dir, class_ids, eval_transform(**spec.preprocess))
    loader = make_loader(dataset, batch_size=spec.batch_size, train=False, seed=spec.seed,
                         num_workers=resolve_num_workers(spec.num_workers, device), device=device)
    _, embeddings = embed_dataset(split_at_last_linear(model), loader, device, desc="gallery")
    return gallery_record(torch.from_numpy(embeddings), torch.tensor(dataset.labels))
