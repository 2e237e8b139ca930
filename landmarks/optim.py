"""Optimisers and learning-rate schedules for the training loop."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from landmarks.models import head_parameters
from landmarks.params import OPTIMIZERS, SCHEDULERS


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
