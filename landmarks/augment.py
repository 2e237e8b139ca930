"""Training augmentation as batched tensor ops on the training device, with per-photo randomness.

The loader's workers only decode, crop and flip (uint8: cheap, and 4x fewer bytes to move to a
GPU); colour jitter, RandAugment and the normalisation run here on the whole batch. Every photo
draws its own parameters; on the CPU the draws come from torch's global generator, which training
reseeds every epoch, so CPU runs stay bit-for-bit reproducible.

The ops follow torchvision's (ColorJitter(0.3, 0.3, 0.3, 0.05), then RandAugment(num_ops=2,
magnitude=9) over its 14 operations) on float pixels in 0..255: geometric ops resample with
nearest neighbours and fill with black, as torchvision does for uint8 images; hue turns the colour
in YIQ space rather than HSV, which is the one approximation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from landmarks.params import AUGMENT_PRESETS

NUM_BINS, MAGNITUDE = 31, 9  # torchvision's RandAugment defaults, as the `strong` preset used them
LEVEL = MAGNITUDE / (NUM_BINS - 1)
CPU_CHUNK = 8
JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GRAY = torch.tensor([0.299, 0.587, 0.114])


def uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def gray(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luminance of float RGB [B, 3, H, W]."""
    return torch.einsum("bchw,c->bhw", x, _GRAY.to(x.device, x.dtype)).unsqueeze(1)


def blend(x: torch.Tensor, other: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, per photo, clamped to the pixel range (torchvision's _blend);
    `other` None is black. In place: x is a batch of its own (a gathered subset), not a view of another."""
    f = factor.view(-1, 1, 1, 1)
    x.mul_(f)
    if other is not None:
        x.add_(other * (1 - f))  # other is per photo: [B, 1, 1, 1] or [B, 1, H, W], cheaper than x
    return x.clamp_(0, 255)


def color_matrix(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per photo (3x3 matrix A, factor k) of ColorJitter's brightness, contrast, saturation and hue:
    x' = A x + k * mean_gray(x). All four are linear in the pixels, so one matrix applies them
    together (one pass over the pixels instead of four); only the clamps between them are dropped."""
    b, c, s = (uniform(n, 1 - JITTER[k], 1 + JITTER[k], device) for k in ("brightness", "contrast", "saturation"))
    theta = uniform(n, -JITTER["hue"], JITTER["hue"], device) * 2 * math.pi
    yiq = _RGB_TO_YIQ.to(device, dtype)
    rot = torch.zeros(n, 3, 3, device=device, dtype=dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = torch.cos(theta), -torch.sin(theta), torch.sin(theta), torch.cos(theta)
    hue = torch.linalg.inv(yiq) @ rot @ yiq
    eye = torch.eye(3, device=device, dtype=dtype)
    to_gray = torch.ones(3, 1, device=device, dtype=dtype) @ _GRAY.to(device, dtype).view(1, 3)
    sat = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * to_gray
    # brightness b, then contrast c around the (brightened) mean grey, then saturation, then hue;
    # the grey axis is left alone by saturation and hue, so the mean-grey term passes through them.
    return hue @ sat * (c * b).view(-1, 1, 1), (1 - c) * b


def color_jitter(x: torch.Tensor) -> torch.Tensor:
    a, k = color_matrix(len(x), x.device, x.dtype)
    mean_gray = x.mean(dim=(2, 3)) @ _GRAY.to(x.device, x.dtype)  # the mean of the grey image, per photo
    out = torch.einsum("bij,bjhw->bihw", a, x)
    return out.add_((k * mean_gray).view(-1, 1, 1, 1)).clamp_(0, 255)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each photo through its 2x3 matrix (normalised coordinates), nearest, black outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _geometric(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        n = len(x)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        if kind == "shear_x":
            theta[:, 0, 1] = sign * 0.3 * LEVEL
        elif kind == "shear_y":
            theta[:, 1, 0] = sign * 0.3 * LEVEL
        elif kind in ("translate_x", "translate_y"):  # 150/331 of the side at full magnitude, in [-1, 1] units
            theta[:, 0 if kind == "translate_x" else 1, 2] = sign * 2 * 150.0 / 331.0 * LEVEL
        else:  # rotate
            a = sign * math.radians(30.0 * LEVEL)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)
        return affine(x, theta)
    return op


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13 = (3x3 sum + 4 * centre) / 13) inside
    the border, which torchvision leaves as it is. Sums of shifted slices: cheaper than a convolution."""
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = box.add_(x[..., 1:-1, 1:-1], alpha=4.0).div_(13.0)
    f = factor.view(-1, 1, 1, 1)
    return smooth.lerp_(x, f.expand_as(x)).clamp_(0, 255)  # f * x + (1 - f) * smooth


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(high > low, 255.0 / (high - low).clamp(min=1e-6), torch.ones_like(high))
    return torch.where(high > low, (x - low) * scale, x).clamp(0, 255)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Per photo and channel histogram equalisation, torchvision's rule, vectorised over the batch
    (int32 indices: half the memory traffic of int64, which bincount and index_select both accept)."""
    n, c = x.shape[:2]
    idx = (x.to(torch.int32) + (torch.arange(n * c, dtype=torch.int32, device=x.device) * 256).view(n, c, 1, 1)).flatten()
    hist = torch.bincount(idx, minlength=n * c * 256).view(n * c, 256)
    last = hist.gather(1, (255 - hist.flip(1).ne(0).long().argmax(1)).unsqueeze(1)).squeeze(1)
    step = (hist.sum(1) - last) // 255
    lut = (hist.cumsum(1) + (step // 2).unsqueeze(1)) // step.clamp(min=1).unsqueeze(1)
    lut = torch.cat([torch.zeros(n * c, 1, dtype=lut.dtype, device=x.device), lut[:, :-1]], dim=1).clamp(0, 255)
    out = torch.index_select(lut.to(x.dtype).flatten(), 0, idx).view_as(x)
    return torch.where((step == 0).view(n, c, 1, 1), x, out)


RAND_AUGMENT: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, s: x,
    "shear_x": _geometric("shear_x"),
    "shear_y": _geometric("shear_y"),
    "translate_x": _geometric("translate_x"),
    "translate_y": _geometric("translate_y"),
    "rotate": _geometric("rotate"),
    "brightness": lambda x, s: blend(x, None, 1 + s * 0.9 * LEVEL),
    "color": lambda x, s: blend(x, gray(x), 1 + s * 0.9 * LEVEL),
    "contrast": lambda x, s: blend(x, gray(x).mean(dim=(2, 3), keepdim=True), 1 + s * 0.9 * LEVEL),
    "sharpness": lambda x, s: sharpness(x, 1 + s * 0.9 * LEVEL),
    "posterize": lambda x, s: x.div_(2 ** (8 - 7)).floor_().mul_(2 ** (8 - 7)),  # 7 bits at magnitude 9
    "solarize": lambda x, s: x.sub_((x >= 255.0 * (1 - LEVEL)) * 255.0).abs_(),  # x >= t: 255 - x
    "autocontrast": lambda x, s: autocontrast(x),
    "equalize": lambda x, s: equalize(x),
}


def rand_augment(x: torch.Tensor, num_ops: int = 2, *, masked: bool | None = None) -> torch.Tensor:
    """Each photo gets `num_ops` operations drawn uniformly (with a random sign where it matters).

    On a CPU each operation runs on the photos that drew it; on a GPU it runs on the whole batch and
    a mask keeps it for those photos, which costs spare arithmetic but no host synchronisation
    (`masked` chooses the way; both give the same result)."""
    masked = x.device.type != "cpu" if masked is None else masked
    names = list(RAND_AUGMENT)
    n = len(x)
    choice = torch.randint(len(names), (n, num_ops), device=x.device)
    sign = torch.where(torch.rand(n, num_ops, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
    for slot in range(num_ops):
        for k, name in enumerate(names):
            if name == "identity":
                continue
            if not masked:
                rows = (choice[:, slot] == k).nonzero().squeeze(1)
                if len(rows):
                    x[rows] = RAND_AUGMENT[name](x[rows], sign[rows, slot])
            else:
                keep = (choice[:, slot] == k).view(-1, 1, 1, 1)
                x = torch.where(keep, RAND_AUGMENT[name](x.clone(), sign[:, slot]), x)
    return x


def augment_batch(images: torch.Tensor, *, augment: str, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 [B, 3, S, S] (cropped and flipped by the workers) -> augmented, normalised float [B, 3, S, S]
    on the same device. On the CPU the photos go through in chunks of CPU_CHUNK, whose pixels stay in
    the cache between the many passes (a whole batch at a time is bound by memory bandwidth)."""
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augment={augment!r} is not valid; choose one of: {', '.join(AUGMENT_PRESETS)}")
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    scale = 1.0 / (torch.tensor(std, device=out.device) * 255.0)
    shift = (-torch.tensor(mean, device=out.device) * 255.0 * scale).view(1, 3, 1, 1)
    chunk = CPU_CHUNK if out.device.type == "cpu" else max(1, len(out))
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        if augment == "strong":
            x = rand_augment(color_jitter(x))
        torch.addcmul(shift, x, scale.view(1, 3, 1, 1), out=out[start:start + chunk])  # normalise into place
    return out
