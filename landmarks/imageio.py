"""Decoding images from untrusted sources.

Every image the project touches (downloaded bytes, a user's photo folder, the `landmarks tag`
command) goes through `decode_image`, so they all get the same guarantees: the file is fully
decoded (a truncated JPEG is an error, not a grey stripe), EXIF orientation is honoured, any
Pillow mode becomes 8-bit RGB, and a decompression bomb is refused before its pixels are allocated.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Pillow's own default; params can lower it (download.max_pixels).
DEFAULT_MAX_PIXELS = 178_956_970
JPEG_QUALITY = 90

# A truncated file must fail loudly so it is counted, never half-decoded.
ImageFile.LOAD_TRUNCATED_IMAGES = False

class ImageError(ValueError):
    """An input that is not a usable image. `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode_image(
    source: bytes | str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Fully decode `source` (bytes or a path) into an RGB image with EXIF orientation applied.

    `draft_size` lets JPEG decoding skip detail that a later resize to that shorter side would
    throw away (libjpeg's DCT scaling), which makes big photos several times cheaper to decode.
    Raises ImageError with reason empty_file, not_an_image, too_large or corrupt.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty_file")
        fp: io.BytesIO | str = io.BytesIO(source)
    else:
        if os.path.getsize(source) == 0:
            raise ImageError("empty_file", str(source))
        fp = str(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at 2x raises) on big images; we apply our own limit below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", str(e)) from e
    except (OSError, SyntaxError, ValueError) as e:
        # For bytes Pillow names the BytesIO object, a memory address that means nothing to whoever sent them.
        detail = str(e).replace(f" {fp!r}", "") if isinstance(fp, io.BytesIO) else str(e)
        raise ImageError("not_an_image", detail) from e
    try:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError("too_large", f"{width}x{height} pixels exceeds the limit of {max_pixels}")
        if draft_size and img.format == "JPEG":
            # draft() keeps both sides >= the requested size, so the shorter side stays >= draft_size.
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
        return to_rgb(img)
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for corrupt data; all mean the same here.
        raise ImageError("corrupt", f"{type(e).__name__}: {e}") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha is composited on white, 16-bit is rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit PNGs use the full 0..65535 range; plain 32-bit ints are rescaled by their maximum.
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (never upscale), keeping the aspect ratio."""
    width, height = img.size
    short = min(width, height)
    if short <= size:
        return img
    scale = size / short
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)


def encode_jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an RGB image as a baseline JPEG."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
