"""The synthetic dataset in GLDv2's formats: ids, per-photo generators, validation, generate_dataset.

Every photo has its own generator, seeded by a key that names it: (seed, kind, index) for the
landmark photos, (seed, stream, ...) for the distractors, whose streams no landmark kind can equal.
So a photo never depends on which others were rendered, or in what order.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import numbers
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from landmarks.files import atomic_write_bytes
from landmarks.synthetic.distractors import SCENE_TYPES, render_distractor_jpeg
from landmarks.synthetic.kinds import KINDS, LANDMARK_NAMES
from landmarks.synthetic.scene import MIN_IMAGE_SIZE, render_jpeg

# GLDv2 landmark ids run from 0 to 203093; ours are drawn from the same range.
MAX_LANDMARK_ID = 203_093
CATEGORY_PREFIX = "http://commons.wikimedia.org/wiki/Category:"
MAX_DISTRACTOR_FRACTION = 0.9
# Second entries of the distractors' generator keys; landmark keys have a kind (< len(KINDS)) there.
SCENE_STREAM = 0xD15C0
OTHER_KIND_STREAM = 0xD15C1
DISTRACTOR_TABLE_COLUMNS = ["id", "url", "kind"]


def photo_rng(key: tuple[int, ...]) -> np.random.Generator:
    """The generator of the photo that `key` names."""
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def image_rng(seed: int, kind: int, index: int) -> np.random.Generator:
    """Each landmark photo's own generator: a photo doesn't depend on which others were rendered, or in what order."""
    return photo_rng((seed, kind, index))


def image_id(seed: int, kind: int, index: int) -> str:
    """A GLDv2-style id: 16 lowercase hex digits, fixed by (seed, kind, index)."""
    return hashlib.blake2b(f"synthetic/{seed}/{kind}/{index}".encode(), digest_size=8).hexdigest()


def distractor_id(seed: int, subject: str, index: int) -> str:
    """A distractor's GLDv2-style id, from a namespace of its own: image_id never hashes the same text."""
    return hashlib.blake2b(f"synthetic-distractor/{seed}/{subject}/{index}".encode(), digest_size=8).hexdigest()


def category_url(name: str) -> str:
    """The Wikimedia Commons category URL GLDv2 gives a landmark (spaces become underscores)."""
    return CATEGORY_PREFIX + quote(name.replace(" ", "_"), safe="_(),'-.!*")


def landmark_ids(seed: int) -> list[int]:
    """GLDv2-like landmark ids for every kind: unique, not contiguous, fixed by the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5]))
    return [int(v) + 1 for v in rng.choice(MAX_LANDMARK_ID, size=len(KINDS), replace=False)]


def distractor_count(num_classes: int, images_per_class: int, fraction: float) -> int:
    """How many distractors make them `fraction` of all the photos rendered."""
    return round(num_classes * images_per_class * fraction / (1 - fraction))


def plan_distractors(seed: int, num_classes: int, count: int) -> list[tuple[str, int | str, tuple[int, ...], str]]:
    """(kind, subject, generator key, id) of each distractor photo.

    Half of them (rounded down) are landmarks of the kinds outside the class list, drawn exactly like
    the landmark photos, in turn; the rest, or all when every kind is a class, are scenes with no
    landmark, one type after another. Within a kind or scene type the photos are numbered from 0,
    so each photo depends only on (seed, its kind or scene type, its number).
    """
    others = list(range(num_classes, len(KINDS)))
    n_other = count // 2 if others else 0
    plan: list[tuple[str, int | str, tuple[int, ...], str]] = []
    for j in range(n_other):
        kind, index = others[j % len(others)], j // len(others)
        plan.append((f"other_landmark:{LANDMARK_NAMES[kind]}", kind, (seed, OTHER_KIND_STREAM, kind, index),
                     distractor_id(seed, f"other/{kind}", index)))
    for j in range(count - n_other):
        t, index = j % len(SCENE_TYPES), j // len(SCENE_TYPES)
        scene = SCENE_TYPES[t]
        plan.append((f"scene:{scene}", scene, (seed, SCENE_STREAM, t, index),
                     distractor_id(seed, f"scene/{scene}", index)))
    return plan


def _render_one(job: tuple[int | str, tuple[int, ...], int, str]) -> None:
    """Render one photo: `subject` is a landmark kind (an int) or a distractor scene type (a str)."""
    subject, key, size, path = job
    render = render_jpeg if isinstance(subject, int) else render_distractor_jpeg
    atomic_write_bytes(path, render(subject, photo_rng(key), size))  # type: ignore[arg-type]


def check_int(key: str, value: object, lo: int, hi: int | None = None) -> int:
    """`value` as an int if it is a whole number in lo..hi, else a ValueError naming the argument."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{key}={value!r} is not valid; use {allowed}")
    return int(value)


def check_fraction(key: str, value: object, hi: float) -> float:
    """`value` as a float if it is a number in 0..hi, else a ValueError naming the argument."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not 0 <= value <= hi:  # type: ignore[operator]
        raise ValueError(f"{key}={value!r} is not valid; use a number from 0 to {hi}")
    return float(value)  # type: ignore[arg-type]


def generate_dataset(out_dir: Path, *, num_classes: int, images_per_class: int, image_size: int, seed: int,
                     distractor_fraction: float, workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Render the synthetic dataset into out_dir/images/<id>.jpg and return GLDv2's two tables and the distractors.

    Returns (train, categories, distractors): train has columns id,url,landmark_id (url is the
    file:// URL of the JPEG), shuffled like GLDv2's train.csv; categories has landmark_id,category as
    in train_label_to_category.csv; distractors has id,url,kind for the photos that show no landmark
    of the class list (kind: `scene:<type>` or `other_landmark:<name>`), `distractor_fraction` of all
    the photos, shuffled. The same arguments always give byte-identical files, and the landmark
    photos do not depend on distractor_fraction.
    """
    num_classes = check_int("num_classes", num_classes, 2, len(KINDS))
    images_per_class = check_int("images_per_class", images_per_class, 1)
    image_size = check_int("image_size", image_size, MIN_IMAGE_SIZE)
    seed = check_int("seed", seed, 0)
    distractor_fraction = check_fraction("distractor_fraction", distractor_fraction, MAX_DISTRACTOR_FRACTION)
    workers = check_int("workers", workers, 1)

    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    lids = landmark_ids(seed)
    rows, jobs = [], []
    for kind in range(num_classes):
        for index in range(images_per_class):
            path = (images / f"{image_id(seed, kind, index)}.jpg").resolve()
            rows.append((path.stem, path.as_uri(), lids[kind]))
            jobs.append((kind, (seed, kind, index), image_size, str(path)))  # image_rng(seed, kind, index)
    distractor_rows = []
    for kind_label, subject, key, pid in plan_distractors(
            seed, num_classes, distractor_count(num_classes, images_per_class, distractor_fraction)):
        path = (images / f"{pid}.jpg").resolve()
        distractor_rows.append((pid, path.as_uri(), kind_label))
        jobs.append((subject, key, image_size, str(path)))
    ids = [r[0] for r in rows + distractor_rows]
    if len(set(ids)) != len(ids):  # 64-bit hashes: never expected, but ids must be unique
        raise RuntimeError("synthetic image ids collided; use another seed")

    if workers > 1 and len(jobs) > 8:
        with multiprocessing.get_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_one, jobs, chunksize=8):
                pass
    else:
        for job in jobs:
            _render_one(job)

    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5F1])).permutation(len(rows))
    train = pd.DataFrame([rows[i] for i in order], columns=["id", "url", "landmark_id"])
    categories = pd.DataFrame({"landmark_id": lids[:num_classes],
                               "category": [category_url(n) for n in LANDMARK_NAMES[:num_classes]]})
    shuffle = np.random.default_rng(np.random.SeedSequence([seed, 0xD5F])).permutation(len(distractor_rows))
    distractors = pd.DataFrame([distractor_rows[i] for i in shuffle], columns=DISTRACTOR_TABLE_COLUMNS)
    return train, categories, distractors
