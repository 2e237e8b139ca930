"""Shared image decoding."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from landmarks.imageio import ImageError, decode_image, encode_jpeg, resize_shorter


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "LA"])
def test_every_pillow_mode_decodes_to_8_bit_rgb(mode: str) -> None:
    img = Image.new("RGB", (20, 10), (200, 40, 10)).convert(mode) if mode != "I;16" else Image.fromarray(
        np.full((10, 20), 65535, dtype=np.uint16))
    data = _png(img) if mode != "CMYK" else encode_cmyk(img)
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (20, 10)
    if mode == "I;16":
        assert out.getpixel((0, 0)) == (255, 255, 255)


def encode_cmyk(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("data,reason", [(b"", "empty_file"), (b"<html>nope</html>", "not_an_image")])
def test_non_images_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as e:
        decode_image(data)
    assert e.value.reason == reason


def test_truncated_jpeg_is_corrupt_not_half_decoded() -> None:
    data = encode_jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageError) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.reason == "corrupt"


def test_pixel_limit_refuses_before_decoding() -> None:
    with pytest.raises(ImageError) as e:
        decode_image(_png(Image.new("L", (300, 300))), max_pixels=300 * 299)
    assert e.value.reason == "too_large"


def test_resize_shorter_keeps_aspect_and_never_upscales() -> None:
    assert resize_shorter(Image.new("RGB", (400, 200)), 100).size == (200, 100)
    assert resize_shorter(Image.new("RGB", (40, 20)), 100).size == (40, 20)


@pytest.mark.parametrize(("draft_size", "size"), [(None, (20, 40)), (8, (10, 20))])  # draft: libjpeg's 1/2 scale
def test_exif_orientation_is_applied_so_the_photo_stands_as_taken(draft_size: int | None, size: tuple[int, int]) -> None:
    # Stored 40 wide x 20 high, red left half, blue right; orientation 6: turn 90 degrees clockwise to view.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif)
    img = decode_image(buf.getvalue(), draft_size=draft_size)
    arr = np.asarray(img).astype(int)
    assert img.size == size and img.mode == "RGB"
    h = size[1]
    top, bottom = arr[: h * 2 // 5].mean(axis=(0, 1)), arr[h * 3 // 5:].mean(axis=(0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the left edge is now the top
    assert 0x0112 not in img.getexif()  # and nothing downstream turns it a second time
