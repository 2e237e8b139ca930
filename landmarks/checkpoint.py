"""Self-describing checkpoints: everything needed to rebuild and use a model, in one file.

A checkpoint holds the weights, the factory name and kwargs that rebuild the architecture,
the class list (landmark_id, name, ...) in output order, the preprocessing record (size, mean,
std) and the params that produced it. Evaluate, export and predict need nothing else.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landmarks.files import atomic_write_bytes
from landmarks.models import build_model

FORMAT_VERSION = 1


def make_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    classes: list[dict[str, Any]],
    preprocess: dict[str, Any],
    params: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    gallery: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Bundle a trained model with what rebuilds it, and the training embeddings its open-set score uses."""
    if len(classes) == 0:
        raise ValueError("a checkpoint needs at least one class")
    # DDP wraps the model; store the plain module's weights so loading never depends on how it was trained.
    module = model.module if hasattr(model, "module") else model
    return {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "classes": classes,
        "preprocess": preprocess,
        "params": params,
        "metrics": metrics or {},
        **({"gallery": gallery} if gallery is not None else {}),
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save never leaves a truncated checkpoint."""
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, checkpoint dict)."""
    # weights_only: a checkpoint pulled from a shared remote must not be able to run code when loaded.
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version!r} is not supported (expected {FORMAT_VERSION})")
    kwargs = {**ckpt["arch_kwargs"], "pretrained": False}  # the weights come from the checkpoint itself
    model = build_model(ckpt["arch"], num_classes=len(ckpt["classes"]), **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
