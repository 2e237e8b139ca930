"""The one place that decides how pixels become model inputs.

Evaluation preprocessing is written in plain torch on uint8 tensors (`preprocess_uint8`) and the
exported TorchScript predictor calls the very same function, so training-time evaluation and
deployed inference cannot drift apart. Its arguments come from the checkpoint (`preprocess` dict).
"""
from __future__ import annotations

from typing import Callable, List

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from landmarks.params import AUGMENT_PRESETS

# Eval resizes the shorter side to image_size / crop_fraction, then centre-crops (torchvision's 224/256).
CROP_FRACTION = 0.875


def preprocess_config(*, image_size: int, mean: List[float], std: List[float], crop_fraction: float = CROP_FRACTION) -> dict:
    """The preprocessing record stored in every checkpoint and read back by eval, export and predict."""
    return {
        "image_size": int(image_size),
        "resize_size": int(round(image_size / crop_fraction)),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def preprocess_uint8(
    x: torch.Tensor, image_size: int, resize_size: int, mean: List[float], std: List[float]
) -> torch.Tensor:
    """uint8 RGB [B,3,H,W] of any H, W -> normalised float [B,3,S,S]. TorchScript-compatible."""
    h, w = x.shape[-2], x.shape[-1]
    scale = float(resize_size) / float(min(h, w))
    new_h = max(resize_size, int(round(h * scale)))
    new_w = max(resize_size, int(round(w * scale)))
    y = F.interpolate(x.float(), size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
    top = (new_h - image_size) // 2
    left = (new_w - image_size) // 2
    y = y[:, :, top : top + image_size, left : left + image_size]
    m = torch.tensor(mean, dtype=y.dtype, device=y.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=y.dtype, device=y.device).view(1, 3, 1, 1) * 255.0
    return (y - m) / s


def eval_transform(
    *, image_size: int, resize_size: int, mean: List[float], std: List[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalised [3,S,S] tensor, exactly as the exported predictor computes it."""

    def transform(img: Image.Image) -> torch.Tensor:
        return preprocess_uint8(pil_to_tensor(img).unsqueeze(0), image_size, resize_size, mean, std)[0]

    return transform


def train_transform(
    *, image_size: int, resize_size: int, mean: List[float], std: List[float], augment: str
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> augmented, normalised [3,S,S] tensor.

    `paper` is the original work's recipe (resize, random crop, flip); `strong` adds scale and
    colour jitter plus RandAugment, which matters for small datasets like 300 images a class.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augment={augment!r} is not valid; choose one of: {', '.join(AUGMENT_PRESETS)}")
    if augment == "none":
        return eval_transform(image_size=image_size, resize_size=resize_size, mean=mean, std=std)
    if augment == "paper":
        ops = [T.Resize(resize_size), T.RandomCrop(image_size), T.RandomHorizontalFlip()]
    else:
        ops = [
            T.RandomResizedCrop(image_size, scale=(0.35, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.05),
            T.RandAugment(num_ops=2, magnitude=9),
        ]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])
