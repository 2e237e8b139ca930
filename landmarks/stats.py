"""Per-channel mean and std of the training images, for input normalisation."""
from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from tqdm import tqdm

from landmarks.imageio import decode_image, resize_shorter


def channel_stats(paths: Iterable[str | os.PathLike], *, image_size: int) -> dict[str, list[float]]:
    """Mean and std over every pixel of every image, each image resized (shorter side) to `image_size`.

    Sums are accumulated in float64, so the result does not depend on image order beyond rounding.
    """
    if image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be >= 1")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = images = 0
    for path in tqdm(list(paths), desc="stats", leave=False, dynamic_ncols=True):
        img = resize_shorter(decode_image(path, draft_size=image_size), image_size)
        pixels = np.asarray(img, dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels**2).sum(0)
        count += len(pixels)
        images += 1
    if count == 0:
        raise ValueError("no training images to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return {"mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std], "num_images": images}
