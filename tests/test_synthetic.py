"""The synthetic landmark dataset: deterministic, in GLDv2's formats, learnable but not trivially,
with distractor photos that show no landmark of the class list."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from landmarks.synthetic import (
    KINDS,
    LANDMARK_NAMES,
    MAX_LANDMARK_ID,
    SCENE_TYPES,
    Kind,
    category_url,
    generate_dataset,
    render_distractor,
    render_landmark,
)
from landmarks.synthetic import scene as scene_module

SMALL = dict(num_classes=3, images_per_class=4, image_size=64, distractor_fraction=0.0)


def file_bytes(train: pd.DataFrame) -> dict[str, bytes]:
    return {row.id: Path(unquote(urlparse(row.url).path)).read_bytes() for row in train.itertuples()}


def test_same_seed_gives_byte_identical_images(tmp_path: Path) -> None:
    a, _, _ = generate_dataset(tmp_path / "a", seed=7, **SMALL)
    b, _, _ = generate_dataset(tmp_path / "b", seed=7, **SMALL)
    assert list(a.id) == list(b.id)
    assert list(a.landmark_id) == list(b.landmark_id)
    assert file_bytes(a) == file_bytes(b)


def test_different_seed_gives_different_images_and_ids(tmp_path: Path) -> None:
    a, cats_a, _ = generate_dataset(tmp_path / "a", seed=7, **SMALL)
    b, cats_b, _ = generate_dataset(tmp_path / "b", seed=8, **SMALL)
    assert not set(a.id) & set(b.id)
    assert list(cats_a.landmark_id) != list(cats_b.landmark_id)
    assert not set(file_bytes(a).values()) & set(file_bytes(b).values())


def test_images_do_not_depend_on_worker_count_or_dataset_size(tmp_path: Path) -> None:
    serial, _, _ = generate_dataset(tmp_path / "serial", seed=3, workers=1, **SMALL)
    pooled, _, _ = generate_dataset(tmp_path / "pooled", seed=3, workers=2, **SMALL)
    assert file_bytes(serial) == file_bytes(pooled)
    # A smaller dataset is a subset of the bigger one: each image depends only on (seed, class, index).
    fewer, _, _ = generate_dataset(tmp_path / "fewer", seed=3, num_classes=2, images_per_class=2, image_size=64,
                                   distractor_fraction=0.0)
    big = file_bytes(serial)
    small = file_bytes(fewer)
    assert len(small) == 4
    assert all(big[i] == data for i, data in small.items())


def test_train_table_is_in_gldv2_format(tmp_path: Path) -> None:
    train, cats, _ = generate_dataset(tmp_path / "d", seed=1, **SMALL)
    assert list(train.columns) == ["id", "url", "landmark_id"]
    assert len(train) == 12 and train.id.is_unique
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in train.id)
    for row in train.itertuples():
        assert row.url.startswith("file:///")
        path = Path(unquote(urlparse(row.url).path))
        assert path.is_absolute() and path.name == f"{row.id}.jpg"
        assert path == (tmp_path / "d" / "images" / f"{row.id}.jpg").resolve()
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"
    assert train.landmark_id.value_counts().to_dict() == {lid: 4 for lid in cats.landmark_id}
    # GLDv2's train.csv is not grouped by landmark; ours must not be either.
    assert not train.landmark_id.is_monotonic_increasing
    assert (train.landmark_id.diff().fillna(0) != 0).sum() > 3


def test_categories_table_is_in_gldv2_format(tmp_path: Path) -> None:
    _, cats, _ = generate_dataset(tmp_path / "d", seed=1, **SMALL)
    assert list(cats.columns) == ["landmark_id", "category"]
    assert cats.landmark_id.is_unique
    assert all(1 <= v <= MAX_LANDMARK_ID for v in cats.landmark_id)
    assert list(cats.landmark_id) != list(range(cats.landmark_id.min(), cats.landmark_id.min() + 3))
    for name, url in zip(LANDMARK_NAMES, cats.category):
        assert url == "http://commons.wikimedia.org/wiki/Category:" + name.replace(" ", "_")
        assert re.fullmatch(r"http://commons\.wikimedia\.org/wiki/Category:[A-Za-z_]+", url)


def test_category_url_percent_encodes_like_wikimedia() -> None:
    url = category_url("Château de Chambord")
    assert url == "http://commons.wikimedia.org/wiki/Category:Ch%C3%A2teau_de_Chambord"
    assert category_url("St. Mary's Church (Oslo)").endswith("Category:St._Mary's_Church_(Oslo)")


def test_landmark_names_are_unique_and_there_are_enough_kinds() -> None:
    assert len(KINDS) >= 14
    assert len(set(LANDMARK_NAMES)) == len(LANDMARK_NAMES) == len(KINDS)


@pytest.mark.parametrize("size", [32, 97, 256])
def test_every_kind_renders_at_several_sizes(size: int) -> None:
    for kind in range(len(KINDS)):
        img = render_landmark(kind, np.random.default_rng([size, kind]), size)
        assert img.mode == "RGB" and img.size == (size, size)
        assert np.asarray(img).std() > 5, f"{LANDMARK_NAMES[kind]} rendered a blank image at {size}px"


def test_render_landmark_is_deterministic_for_a_given_generator_state() -> None:
    a = render_landmark(4, np.random.default_rng(11), 80)
    b = render_landmark(4, np.random.default_rng(11), 80)
    c = render_landmark(4, np.random.default_rng(12), 80)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(num_classes=1), "num_classes=1"),
        (dict(num_classes=len(KINDS) + 1), f"num_classes={len(KINDS) + 1}"),
        (dict(num_classes="12"), "num_classes='12'"),
        (dict(images_per_class=0), "images_per_class=0"),
        (dict(images_per_class=2.5), "images_per_class=2.5"),
        (dict(image_size=8), "image_size=8"),
        (dict(seed=-1), "seed=-1"),
        (dict(workers=0), "workers=0"),
    ],
)
def test_bad_config_raises_a_one_line_error_naming_the_value(tmp_path: Path, kwargs: dict, named: str) -> None:
    args = dict(num_classes=3, images_per_class=2, image_size=64, seed=0, distractor_fraction=0.25) | kwargs
    with pytest.raises(ValueError) as err:
        generate_dataset(tmp_path / "d", **args)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert not (tmp_path / "d" / "images").exists() or not any((tmp_path / "d" / "images").iterdir())


def test_numpy_integers_are_accepted_as_config(tmp_path: Path) -> None:
    train, cats, distractors = generate_dataset(tmp_path / "d", num_classes=np.int64(2), images_per_class=np.int32(2),
                                                image_size=np.int64(32), seed=np.uint8(5),
                                                distractor_fraction=np.float64(0.5))
    assert len(train) == 4 and len(cats) == 2 and len(distractors) == 4


@pytest.mark.parametrize("kind, size", [(-1, 64), (len(KINDS), 64), (0, 16)])
def test_render_landmark_rejects_unknown_kind_or_tiny_size(kind: int, size: int) -> None:
    with pytest.raises(ValueError, match=str(kind) if size >= 32 else str(size)):
        render_landmark(kind, np.random.default_rng(0), size)


# --- distractors: photos that show no landmark of the class list -------------------------------

TINY = dict(images_per_class=4, image_size=32)


def local_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.1, 1), (0.25, 4), (0.5, 12), (0.9, 108)])
def test_distractor_count_makes_them_the_given_share_of_all_photos(tmp_path: Path, fraction: float,
                                                                    expected: int) -> None:
    train, _, distractors = generate_dataset(tmp_path / "d", seed=1, num_classes=3, distractor_fraction=fraction,
                                             **TINY)
    assert len(train) == 12 and len(distractors) == expected
    assert list(distractors.columns) == ["id", "url", "kind"]
    assert len(list((tmp_path / "d" / "images").iterdir())) == 12 + expected


def test_distractor_table_points_at_jpegs_beside_the_landmark_photos(tmp_path: Path) -> None:
    _, _, distractors = generate_dataset(tmp_path / "d", seed=1, num_classes=3, distractor_fraction=0.5, **TINY)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in distractors.id)
    assert all(re.fullmatch(r"scene:[a-z]+|other_landmark:[A-Za-z ]+", k) for k in distractors.kind)
    for row in distractors.itertuples():
        path = local_path(row.url)
        assert row.url.startswith("file:///") and path == (tmp_path / "d" / "images" / f"{row.id}.jpg").resolve()
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (32, 32) and img.mode == "RGB"


def test_distractors_are_deterministic_from_the_seed_and_byte_identical(tmp_path: Path) -> None:
    args = dict(num_classes=4, distractor_fraction=0.6, **TINY)
    _, _, a = generate_dataset(tmp_path / "a", seed=5, workers=1, **args)
    _, _, b = generate_dataset(tmp_path / "b", seed=5, workers=2, **args)
    _, _, c = generate_dataset(tmp_path / "c", seed=6, **args)
    assert list(a.id) == list(b.id) and list(a.kind) == list(b.kind)
    assert file_bytes(a) == file_bytes(b)
    assert not set(a.id) & set(c.id)
    assert not set(file_bytes(a).values()) & set(file_bytes(c).values())


def test_landmark_photos_are_unchanged_by_adding_distractors(tmp_path: Path) -> None:
    args = dict(seed=9, num_classes=4, **TINY)
    plain, cats_plain, none = generate_dataset(tmp_path / "plain", distractor_fraction=0.0, **args)
    mixed, cats_mixed, some = generate_dataset(tmp_path / "mixed", distractor_fraction=0.3, **args)
    assert none.empty and list(none.columns) == ["id", "url", "kind"]
    assert len(some) == 7
    assert list(plain.id) == list(mixed.id) and list(plain.landmark_id) == list(mixed.landmark_id)
    assert cats_plain.equals(cats_mixed)
    assert file_bytes(plain) == file_bytes(mixed)


def test_ids_are_unique_across_landmarks_and_distractors(tmp_path: Path) -> None:
    train, _, distractors = generate_dataset(tmp_path / "d", seed=2, num_classes=6, distractor_fraction=0.75,
                                             **TINY)
    ids = list(train.id) + list(distractors.id)
    assert len(distractors) == 72 and len(set(ids)) == len(ids)


def test_both_distractor_types_appear_and_other_kinds_lie_outside_the_class_list(tmp_path: Path) -> None:
    _, _, distractors = generate_dataset(tmp_path / "d", seed=3, num_classes=5, distractor_fraction=0.5, **TINY)
    kinds = distractors.kind.str.split(":", n=1, expand=True)
    assert kinds[0].value_counts().to_dict() == {"other_landmark": 10, "scene": 10}
    assert set(kinds[1][kinds[0] == "other_landmark"]) <= set(LANDMARK_NAMES[5:])
    assert set(kinds[1][kinds[0] == "scene"]) == set(SCENE_TYPES)


def test_with_every_kind_a_class_all_distractors_are_scenes(tmp_path: Path) -> None:
    _, _, distractors = generate_dataset(tmp_path / "d", seed=3, num_classes=len(KINDS), images_per_class=1,
                                         image_size=32, distractor_fraction=0.25)
    assert len(distractors) == 6 and distractors.kind.str.startswith("scene:").all()


def test_only_other_kind_distractors_draw_landmarks_and_only_kinds_outside_the_classes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []

    def spy(i: int, k: Kind) -> Kind:
        def draw(*args: object) -> None:
            drawn.append(i)
            k.draw(*args)
        return Kind(k.name, draw, k.width, k.height)

    monkeypatch.setattr(scene_module, "KINDS", [spy(i, k) for i, k in enumerate(KINDS)])
    _, _, distractors = generate_dataset(tmp_path / "d", seed=4, num_classes=len(KINDS) - 2, images_per_class=2,
                                         image_size=32, distractor_fraction=0.5, workers=1)
    others = distractors.kind[distractors.kind.str.startswith("other_landmark:")]
    assert len(others) == 16 and len(distractors) == 32
    expected = {i: 2 for i in range(len(KINDS) - 2)} | {len(KINDS) - 2: 8, len(KINDS) - 1: 8}
    assert {i: drawn.count(i) for i in set(drawn)} == expected


@pytest.mark.parametrize("size", [32, 97])
def test_every_scene_type_renders_a_deterministic_photo(size: int) -> None:
    for scene in SCENE_TYPES:
        a = render_distractor(scene, np.random.default_rng([size, 1]), size)
        b = render_distractor(scene, np.random.default_rng([size, 1]), size)
        assert a.mode == "RGB" and a.size == (size, size)
        assert np.asarray(a).std() > 5, f"{scene} rendered a blank image at {size}px"
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("scene, size", [("cathedral", 64), ("street", 16)])
def test_render_distractor_rejects_unknown_scene_or_tiny_size(scene: str, size: int) -> None:
    with pytest.raises(ValueError, match=scene if size >= 32 else str(size)):
        render_distractor(scene, np.random.default_rng(0), size)


@pytest.mark.parametrize("value", [-0.1, 0.95, "abc", True, None, float("nan")])
def test_bad_distractor_fraction_raises_a_one_line_error_naming_the_value(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError) as err:
        generate_dataset(tmp_path / "d", seed=0, num_classes=3, images_per_class=2, image_size=32,
                         distractor_fraction=value)
    message = str(err.value)
    assert f"distractor_fraction={value!r}" in message and "0 to 0.9" in message and "\n" not in message
    assert not (tmp_path / "d" / "images").exists()


# --- learnable, but not from raw pixels --------------------------------------------------------

LEARN_CLASSES, LEARN_TRAIN, LEARN_VAL, LEARN_SIZE = 12, 36, 14, 96
CNN_SIZE = 40  # small enough for a CPU to train a CNN in seconds, big enough to see the shapes


@pytest.fixture(scope="module")
def learn_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val) as uint8 NHWC arrays at CNN_SIZE px, from a freshly generated set."""
    out = tmp_path_factory.mktemp("learn")
    train, cats, _ = generate_dataset(out, num_classes=LEARN_CLASSES, images_per_class=LEARN_TRAIN + LEARN_VAL,
                                      image_size=LEARN_SIZE, seed=2024, distractor_fraction=0.0)
    label = {lid: i for i, lid in enumerate(cats.landmark_id)}
    xs, ys = [], []
    for row in train.itertuples():
        with Image.open(Path(unquote(urlparse(row.url).path))) as img:
            xs.append(np.asarray(img.convert("RGB").resize((CNN_SIZE, CNN_SIZE), Image.Resampling.BILINEAR)))
        ys.append(label[row.landmark_id])
    x, y = np.stack(xs), np.asarray(ys)
    # Stratified: the first LEARN_TRAIN rows of each class (rows are already shuffled) train, the rest validate.
    rank = np.zeros(len(y), dtype=int)
    for c in range(LEARN_CLASSES):
        rank[y == c] = np.arange((y == c).sum())
    tr = rank < LEARN_TRAIN
    return x[tr], y[tr], x[~tr], y[~tr]


def linear_pixel_accuracy(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray) -> float:
    def flat(x: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.Resampling.BILINEAR)) for i in x]
                        ).reshape(len(x), -1) / 255.0

    scaler = StandardScaler().fit(flat(xtr))
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(flat(xtr)), ytr)
    return float(clf.score(scaler.transform(flat(xva)), yva))


def tiny_cnn_accuracy(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, epochs: int) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    to_t = lambda x: torch.tensor(x).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    xt, xv, yt = to_t(xtr), to_t(xva), torch.tensor(ytr)
    mean, std = xt.mean((0, 2, 3), keepdim=True), xt.std((0, 2, 3), keepdim=True)
    xt, xv = (xt - mean) / std, (xv - mean) / std

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(block(3, 24), block(24, 48), block(48, 96), block(96, 128),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, LEARN_CLASSES))
    bs = 32
    opt = torch.optim.AdamW(net.parameters(), 4e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=epochs * -(-len(xt) // bs), pct_start=0.15)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for b in range(0, len(xt), bs):
            idx = perm[b:b + bs]
            x = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(net(x), yt[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        return float((net(xv).argmax(1).numpy() == yva).mean())


def test_linear_model_on_raw_pixels_stays_far_below_a_small_cnn(learn_set) -> None:
    xtr, ytr, xva, yva = learn_set
    # One thread each: on a busy 2-core machine, BLAS and torch threads fighting for cores run many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            linear = linear_pixel_accuracy(xtr, ytr, xva, yva)
            cnn = tiny_cnn_accuracy(xtr, ytr, xva, yva, epochs=12)
    finally:
        torch.set_num_threads(threads)
    print(f"linear on pixels {linear:.3f}, tiny CNN {cnn:.3f}, chance {1 / LEARN_CLASSES:.3f}")
    # Colour and position must not give the class away...
    assert linear < 0.45
    # ...but the shapes must: a tiny CNN trained for seconds already does clearly better.
    assert cnn > linear + 0.25
