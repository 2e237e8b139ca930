"""The one place that decides how pixels become model inputs.

Evaluation preprocessing is written in plain torch on uint8 tensors (`preprocess_uint8`) and the
exported TorchScript predictor calls the very same function, so training-time evaluation and
deployed inference cannot drift apart. Its arguments come from the checkpoint (`preprocess` dict).
Training crops photos in the loader's workers and augments whole batches on the device.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Tuple

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


def resized_shape(h: int, w: int, resize_size: int) -> Tuple[int, int]:
    """(height, width) of an h x w image whose shorter side is scaled to resize_size, the longer one
    rounded half up.

    Integer arithmetic, so that TorchScript, torch.export and every ONNX runtime compute the very same
    size: a float scale leaves exact halves (a 320 x 360 photo at 292: 360 * 292/320 = 328.5) to the
    rounding rule and the precision of each runtime. Under torch.export h and w are symbolic, and
    sym_min keeps the size a formula of the input shape rather than a guard on which side is
    shorter, so one exported program takes any H, W.
    It is the size the earlier float formula (round(side * resize_size / shorter)) gave, except at
    those exact halves, which that one rounded to even (or, through float error, either way): about 1
    shape in 1000; a stored 320 x 360 or 320 x 1000 photo at efficientnet_lite2's 292 now gets one
    column more. The tests pin both.
    """
    if torch.jit.is_scripting():
        m = min(h, w)
    else:
        m = torch.sym_min(h, w)
    # round(side * resize_size / m), half up; the shorter side comes out as resize_size exactly
    return (2 * h * resize_size + m) // (2 * m), (2 * w * resize_size + m) // (2 * m)


def preprocess_uint8(
    x: torch.Tensor, image_size: int, resize_size: int, mean: List[float], std: List[float]
) -> torch.Tensor:
    """uint8 RGB [B,3,H,W] of any H, W -> normalised float [B,3,S,S]. TorchScript-compatible, and
    exportable with dynamic H, W by torch.export and torch.onnx (antialiased resize: ONNX Resize
    with antialias=1)."""
    new_h, new_w = resized_shape(x.shape[-2], x.shape[-1], resize_size)
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


def train_crop(*, image_size: int, resize_size: int, augment: str) -> Callable[[Image.Image], torch.Tensor]:
    """What the loader's workers do to a training photo: crop it to image_size and flip it at random,
    as uint8 [3, S, S].

    `paper` is the original work's crop (resize, then a random image_size crop); `strong` a random
    resized crop (35-100% of the area, aspect 3/4 to 4/3, as torchvision's). The rest of the
    augmentation runs on the training device, in batches (landmarks.augment). Resizing uint8 tensors
    with torch's vectorised kernel costs a third of PIL's; the flip is one row copy here, where on
    the device it would be a gather and a scatter of half the batch.
    """
    if augment not in ("paper", "strong"):
        raise ValueError(f"augment={augment!r} has no training crop; choose paper or strong")

    def resize(x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]

    def crop(img: Image.Image) -> torch.Tensor:
        w, h = img.size  # an HWC view: torch's uint8 resize is fastest on channels-last pixels
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)
        if augment == "strong":
            top, left, h, w = T.RandomResizedCrop.get_params(x, [0.35, 1.0], [3 / 4, 4 / 3])
            x = resize(x[:, top:top + h, left:left + w], [image_size, image_size])
        else:
            h, w = x.shape[-2:]
            scale = resize_size / min(h, w)
            x = resize(x, [max(image_size, round(h * scale)), max(image_size, round(w * scale))])
            top = int(torch.randint(0, x.shape[-2] - image_size + 1, ()))
            left = int(torch.randint(0, x.shape[-1] - image_size + 1, ()))
            x = x[:, top:top + image_size, left:left + image_size]
        return x.flip(-1).contiguous() if torch.rand(()) < 0.5 else x.contiguous()

    return crop


def train_inputs(
    *, image_size: int, resize_size: int, mean: List[float], std: List[float], augment: str
) -> tuple[Callable[[Image.Image], torch.Tensor], Callable[[torch.Tensor], torch.Tensor] | None]:
    """(worker transform, batch transform on the training device) for training photos.

    `none` is the evaluation transform in the workers (the features a frozen backbone caches must
    be the predictor's own) and nothing on the device; `paper` and `strong` crop to uint8 in the
    workers and augment and normalise whole batches on the device.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augment={augment!r} is not valid; choose one of: {', '.join(AUGMENT_PRESETS)}")
    if augment == "none":
        return eval_transform(image_size=image_size, resize_size=resize_size, mean=mean, std=std), None
    from landmarks.augment import augment_batch  # the predictor's preprocessing does not need it

    return (train_crop(image_size=image_size, resize_size=resize_size, augment=augment),
            partial(augment_batch, augment=augment, mean=list(mean), std=list(std)))
