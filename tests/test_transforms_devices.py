"""The one transform builder and device/loader selection."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from landmarks.devices import resolve_num_workers, select_device
from tests.conftest import make_spec
from landmarks.transforms import (
    AUGMENT_PRESETS, eval_transform, preprocess_config, preprocess_uint8, resized_shape, train_inputs,
)

PRE = preprocess_config(image_size=48, mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.2])


def _photo(w: int = 90, h: int = 60) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def augmented(images: list[Image.Image], augment: str) -> torch.Tensor:
    """What training feeds the model: the workers' transform, then the batch transform on the device."""
    worker, prepare = train_inputs(**PRE, augment=augment)
    batch = torch.stack([worker(img) for img in images])
    return prepare(batch) if prepare is not None else batch


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
def test_every_augmentation_preset_yields_the_configured_image_size(augment: str) -> None:
    out = augmented([_photo(), _photo(60, 90)], augment)
    assert out.shape == (2, 3, 48, 48) and out.dtype == torch.float32


def test_image_size_param_sets_both_crop_and_resize() -> None:
    pre = preprocess_config(image_size=224, mean=[0.5] * 3, std=[0.5] * 3)
    assert pre["resize_size"] == 256  # torchvision's 224/256 convention
    assert eval_transform(**pre)(_photo(300, 500)).shape == (3, 224, 224)


def test_unknown_augmentation_preset_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="augment='heavy'.*paper, strong"):
        train_inputs(**PRE, augment="heavy")


def test_eval_transform_is_exactly_the_predictor_preprocessing() -> None:
    img = _photo(97, 71)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
    assert torch.equal(eval_transform(**PRE)(img), preprocess_uint8(x, **PRE)[0])


def test_the_shorter_side_becomes_the_resize_size_and_the_longer_one_rounds_half_up() -> None:
    for h, w in [(320, 320), (320, 427), (427, 320), (2, 5), (1, 40), (3000, 4000)]:
        new_h, new_w = resized_shape(h, w, 292)
        assert min(new_h, new_w) == 292 and (new_h >= new_w) == (h >= w)
        exact = max(h, w) * 292 / min(h, w)
        assert max(new_h, new_w) == int(exact + 0.5)  # half up, not Python's half to even
    assert resized_shape(320, 360, 292) == (292, 329)  # 328.5: round() would give 328
    assert preprocess_uint8(torch.zeros(1, 3, 320, 360, dtype=torch.uint8), 260, 292, [0.5] * 3, [0.5] * 3).shape[-2:] == (260, 260)


def old_resized_shape(h: int, w: int, resize_size: int) -> tuple[int, int]:
    """The resize size before the integer formula: a float scale and Python's round (half to even)."""
    scale = float(resize_size) / float(min(h, w))
    return max(resize_size, int(round(h * scale))), max(resize_size, int(round(w * scale)))


def old_preprocess_uint8(x: torch.Tensor, image_size: int, resize_size: int, mean: list[float],
                         std: list[float]) -> torch.Tensor:
    """preprocess_uint8 as it was, resize size from old_resized_shape."""
    new_h, new_w = old_resized_shape(x.shape[-2], x.shape[-1], resize_size)
    y = torch.nn.functional.interpolate(x.float(), size=[new_h, new_w], mode="bilinear", align_corners=False,
                                        antialias=True)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    y = y[:, :, top:top + image_size, left:left + image_size]
    return (y - torch.tensor(mean).view(1, 3, 1, 1) * 255.0) / (torch.tensor(std).view(1, 3, 1, 1) * 255.0)


# resize_size of the backbones' preprocessing (lite0 256, lite1 272, lite2 292, resnet/torchvision 232 and 256)
# and of small test models
RESIZE_SIZES = (256, 272, 292, 232, 37, 9)


def test_the_resize_size_is_the_old_one_everywhere_but_at_exact_halves() -> None:
    """Evaluation and every exported predictor share preprocess_uint8: the integer formula must not move
    the metrics. It gives the old float formula's size for every shape whose longer side is not exactly
    x.5 after scaling; there the old one rounded to even (or by float noise), the new one always up."""
    halves = 0
    for rs in RESIZE_SIZES:
        for short in range(1, 400):
            for long in range(short, 2 * short + 2):
                exact = Fraction(long * rs, short)
                new = resized_shape(short, long, rs)
                if exact.denominator == 2:
                    halves += 1
                    assert new == (rs, int(exact) + 1), (short, long, rs)
                else:
                    assert new == old_resized_shape(short, long, rs), (short, long, rs)
                    assert resized_shape(long, short, rs) == old_resized_shape(long, short, rs)
    assert 0 < halves < 0.005 * len(RESIZE_SIZES) * 400 * 400  # rare: well under 1 shape in 200


def test_preprocessing_is_unchanged_for_the_photo_sizes_the_pipeline_sees() -> None:
    """Stored photos have a shorter side of 320 (download.image_size); camera aspect ratios, both
    orientations, at each backbone's resize size: bit-for-bit the old output."""
    g = torch.Generator().manual_seed(0)
    for long in (320, 427, 480, 569, 640, 400, 1024):  # 1:1, 4:3, 3:2, 16:9, 2:1, 5:4, 16:5
        for h, w in ((320, long), (long, 320)):
            x = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g)
            for rs in RESIZE_SIZES[:5]:
                size = rs * 7 // 8
                assert resized_shape(h, w, rs) == old_resized_shape(h, w, rs)
                assert torch.equal(preprocess_uint8(x, size, rs, [0.5] * 3, [0.25] * 3),
                                   old_preprocess_uint8(x, size, rs, [0.5] * 3, [0.25] * 3)), (h, w, rs)
    # lite0's 256 from stored photos: no exact half at any width, so every stored photo keeps its size
    assert all(resized_shape(320, w, 256) == old_resized_shape(320, w, 256) for w in range(320, 4000))


def test_preprocessing_exports_with_a_symbolic_image_size() -> None:
    """torch.export keeps the resize size a formula of H and W: one program for every size and orientation."""

    class Preprocess(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return preprocess_uint8(x, 8, 9, [0.5] * 3, [0.25] * 3)

    dims = {"x": {2: torch.export.Dim("h", min=1), 3: torch.export.Dim("w", min=1)}}
    program = torch.export.export(Preprocess(), (torch.zeros(1, 3, 13, 11, dtype=torch.uint8),), dynamic_shapes=dims)
    g = torch.Generator().manual_seed(0)
    for h, w in [(11, 13), (13, 11), (9, 9), (1, 30), (41, 7)]:
        x = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=g)
        assert torch.equal(program.module()(x), Preprocess()(x)), (h, w)


def test_normalisation_uses_the_given_mean_and_std() -> None:
    flat = Image.new("RGB", (64, 64), (128, 102, 77))
    out = eval_transform(**PRE)(flat)
    expected = (torch.tensor([128, 102, 77]) / 255 - torch.tensor(PRE["mean"])) / torch.tensor(PRE["std"])
    assert torch.allclose(out[:, 10, 10], expected, atol=1e-5)


def test_paper_augmentation_flips_and_crops_but_keeps_colours() -> None:
    torch.manual_seed(0)
    flat = Image.new("RGB", (64, 64), (128, 102, 77))
    out = augmented([flat] * 4, "paper")
    assert torch.allclose(out, eval_transform(**PRE)(flat).expand(4, -1, -1, -1), atol=1e-5)


def test_training_workers_hand_over_uint8_crops_and_the_device_normalises() -> None:
    worker, prepare = train_inputs(**PRE, augment="strong")
    crop = worker(_photo())
    assert crop.dtype == torch.uint8 and crop.shape == (3, 48, 48)
    assert prepare is not None and prepare(crop[None]).dtype == torch.float32
    worker, prepare = train_inputs(**PRE, augment="none")  # cached features must be the predictor's own
    assert prepare is None and torch.equal(worker(_photo()), eval_transform(**PRE)(_photo()))


def test_auto_device_is_the_cpu_without_an_accelerator() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert select_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")


def test_loader_workers_auto_means_none_on_cpu_and_some_on_gpu() -> None:
    assert resolve_num_workers("auto", torch.device("cpu")) == 0
    assert resolve_num_workers("auto", torch.device("cuda", 0)) >= 1
    assert resolve_num_workers(3, torch.device("cpu")) == 3


def test_label_smoothing_reaches_the_loss(image_tree, tmp_path) -> None:
    from landmarks.train import train_classifier

    losses = []
    for smoothing in (0.0, 0.5):
        spec = make_spec(image_tree["stats"], epochs=1, lr=1e-9, seed=1, label_smoothing=smoothing, scheduler="none",
                         augment="none")
        r = train_classifier(spec, splits_dir=image_tree["splits"], images_dir=image_tree["images"],
                             out_path=tmp_path / f"{smoothing}.pt")
        losses.append(r["history"][0]["train/loss"])
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
