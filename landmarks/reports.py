"""Figures for the evaluation report and the `landmarks predict --plot` command.

Figures are drawn with matplotlib's object API (Figure + savefig), which renders with Agg and
never touches pyplot's global state or needs a display.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from landmarks.files import atomic_write_bytes

DPI = 110


def _save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Render to PNG and write atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, *, title: str = "") -> None:
    """Confusion matrix, rows = actual, columns = predicted.

    Colours are row-normalised (the share of each actual class), so rare classes are as visible
    as common ones; the raw counts are written in every non-zero cell. Figure size grows with the
    number of classes and the font shrinks, so 50+ classes stay readable.
    """
    cm = np.asarray(matrix)
    c = cm.shape[0]
    side = min(60.0, max(6.0, 0.34 * c + 3.0))
    font = float(np.clip(300.0 / max(c, 1), 5.0, 10.0))
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                color="white" if share[i, j] > 0.5 else "black")
    labels = [_short(n) for n in class_names]
    ax.set_xticks(range(c), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(c), labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title or f"confusion matrix ({int(cm.sum())} images, colour = share of the actual class)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    _save(fig, path, dpi=DPI if c <= 30 else 150)  # small fonts need more pixels to stay legible


def plot_gallery(
    images: Sequence[Image.Image], captions: Sequence[str], path: str | os.PathLike, *, title: str = "", columns: int = 4
) -> None:
    """A grid of images with a caption under each (used for mistakes and training batches)."""
    n = max(1, len(images))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 3.5 * rows))
    if title:
        fig.suptitle(title)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k])
            ax.set_title(captions[k], fontsize=8)
    if not images:
        fig.axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    _save(fig, path)


def denormalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalised [3, H, W] array back to a displayable RGB image."""
    arr = np.asarray(x, dtype=np.float64).transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))


def plot_predictions(
    items: Sequence[tuple[str, Image.Image | np.ndarray | None, Sequence[str], Sequence[float], str]], path: str | os.PathLike
) -> None:
    """One row per image: the photo beside a horizontal bar chart of its top classes.

    Each item is (title, image or None if it failed, class names, probabilities, note).
    """
    n = max(1, len(items))
    fig = Figure(figsize=(10, 3.4 * n))
    for r, (title, img, names, probs, note) in enumerate(items):
        ax_img = fig.add_subplot(n, 2, 2 * r + 1)
        ax_img.axis("off")
        ax_img.set_title(_short(title, 48), fontsize=9)
        ax_bar = fig.add_subplot(n, 2, 2 * r + 2)
        if img is not None:
            ax_img.imshow(img)
        ax_img.text(0.5, -0.06, note, transform=ax_img.transAxes, ha="center", va="top", fontsize=8)
        y = np.arange(len(names))
        ax_bar.barh(y, probs, color="tab:blue")
        ax_bar.set_yticks(y, [_short(s, 36) for s in names], fontsize=8)
        ax_bar.invert_yaxis()  # most probable on top
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xlabel("probability")
        for yi, p in zip(y, probs):
            ax_bar.text(min(p + 0.01, 0.85), yi, f"{p:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
