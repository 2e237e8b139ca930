"""Batched augmentation on the training device: per-photo randomness, torchvision's ops, reproducible."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from landmarks.augment import RAND_AUGMENT, augment_batch, autocontrast, color_jitter, equalize, rand_augment, sharpness


def batch(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_equalize_autocontrast_and_sharpness_match_torchvision_on_uint8() -> None:
    x = batch(4)
    assert torch.equal(equalize(x.float()).to(torch.uint8), TF.equalize(x))
    assert (autocontrast(x.float()) - TF.autocontrast(x).float()).abs().max() <= 1.0  # torchvision rounds to uint8
    got = sharpness(x.float(), torch.full((4,), 1.27))
    assert (got - TF.adjust_sharpness(x, 1.27).float()).abs().max() <= 1.5


def test_each_photo_draws_its_own_augmentation() -> None:
    """Eight copies of one photo come out different: flips, jitter and operations are drawn per photo."""
    torch.manual_seed(0)
    x = batch(1).expand(8, -1, -1, -1).contiguous()
    out = augment_batch(x, augment="strong", mean=[0.5] * 3, std=[0.5] * 3)
    distinct = {tuple(o.flatten()[:64].round(decimals=4).tolist()) for o in out}
    assert len(distinct) == 8


def test_the_same_seed_gives_the_same_batch_on_the_cpu() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(augment_batch(batch(16), augment="strong", mean=[0.4] * 3, std=[0.2] * 3))
    assert torch.equal(outs[0], outs[1])


def test_rand_augment_applies_to_each_photo_exactly_the_operations_it_drew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operations run on the photos that drew them, and the batch order (so the labels) stays put."""
    import landmarks.augment as augment

    names = list(RAND_AUGMENT)
    marked = {name: (lambda k: lambda x, s: x + 10.0 ** k)(k) for k, name in enumerate(names)}
    monkeypatch.setattr(augment, "RAND_AUGMENT", marked)
    x = torch.zeros(64, 3, 4, 4, dtype=torch.float64)  # sums of distinct powers of ten stay exact
    torch.manual_seed(3)
    out = rand_augment(x.clone())
    torch.manual_seed(3)
    choice = torch.randint(len(names), (64, 2))  # the draws rand_augment made
    expected = sum(torch.where(choice[:, s] == 0, 0.0, 10.0 ** choice[:, s].double()) for s in range(2))
    assert torch.equal(out[:, 0, 0, 0], expected)


@pytest.mark.parametrize("name", list(RAND_AUGMENT))
def test_every_operation_keeps_pixels_in_range_and_shape(name: str) -> None:
    x = batch(4).float()
    out = RAND_AUGMENT[name](x.clone(), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255 and torch.isfinite(out).all()


def test_color_jitter_leaves_grey_photos_grey_and_changes_colour_photos() -> None:
    torch.manual_seed(0)
    grey = torch.full((4, 3, 8, 8), 100.0)
    out = color_jitter(grey.clone())
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-3) and torch.allclose(out[:, 1], out[:, 2], atol=1e-3)
    colour = batch(4, 8).float()
    assert not torch.allclose(color_jitter(colour.clone()), colour)


def test_paper_and_none_only_normalise_on_the_device() -> None:
    x = batch(16)
    for augment in ("paper", "none"):
        out = augment_batch(x, augment=augment, mean=[0.5] * 3, std=[0.5] * 3)
        assert torch.allclose(out, x.float() / 127.5 - 1, atol=1e-5)


def test_the_workers_crop_flips_about_half_of_the_photos() -> None:
    from PIL import Image

    from landmarks.transforms import train_crop

    img = Image.fromarray(batch(1, 40)[0].permute(1, 2, 0).numpy())
    crop = train_crop(image_size=40, resize_size=40, augment="paper")  # 40 -> 40: only the flip changes anything
    torch.manual_seed(0)
    outs = [crop(img) for _ in range(40)]
    plain = torch.from_numpy(batch(1, 40)[0].numpy())
    flipped = sum(torch.equal(o, plain.flip(-1)) for o in outs)
    assert sum(torch.equal(o, plain) for o in outs) + flipped == 40 and 8 <= flipped <= 32


def test_strong_crops_are_uint8_at_the_image_size_from_any_photo_shape() -> None:
    from PIL import Image

    from landmarks.transforms import train_crop

    crop = train_crop(image_size=32, resize_size=37, augment="strong")
    for w, h in ((320, 427), (427, 320), (20, 15)):
        out = crop(Image.new("RGB", (w, h), (10, 20, 30)))
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8 and out.is_contiguous()
        assert torch.equal(out[:, 5, 5], torch.tensor([10, 20, 30], dtype=torch.uint8))


def test_the_gpu_way_of_rand_augment_gives_the_cpu_way_result() -> None:
    """On a GPU every operation runs on the whole batch under a mask (no host sync); same photos out."""
    x = batch(24).float()
    torch.manual_seed(5)
    rows = rand_augment(x.clone(), masked=False)
    torch.manual_seed(5)
    masked = rand_augment(x.clone(), masked=True)
    assert torch.allclose(rows, masked, atol=1e-3)
