"""The synthetic dataset in GLDv2's formats: ids, per-photo generators, validation, generate_dataset."""
from __future__ import annotations

import hashlib
import multiprocessing
import numbers
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from landmarks.imageio import atomic_write_bytes
from landmarks.synthetic.kinds import KINDS, LANDMARK_NAMES
from landmarks.synthetic.scene import MIN_IMAGE_SIZE, render_jpeg

# GLDv2 landmark ids run from 0 to 203093; ours are drawn from the same range.
MAX_LANDMARK_ID = 203_093
CATEGORY_PREFIX = "http://commons.wikimedia.org/wiki/Category:"


def image_rng(seed: int, kind: int, index: int) -> np.random.Generator:
    """Each photo's own generator, so a photo doesn't depend on which others were rendered, or in what order."""
    return np.random.default_rng(np.random.SeedSequence([seed, kind, index]))


def image_id(seed: int, kind: int, index: int) -> str:
    """A GLDv2-style id: 16 lowercase hex digits, fixed by (seed, kind, index)."""
    return hashlib.blake2b(f"synthetic/{seed}/{kind}/{index}".encode(), digest_size=8).hexdigest()


def category_url(name: str) -> str:
    """The Wikimedia Commons category URL GLDv2 gives a landmark (spaces become underscores)."""
    return CATEGORY_PREFIX + quote(name.replace(" ", "_"), safe="_(),'-.!*")


def landmark_ids(seed: int) -> list[int]:
    """GLDv2-like landmark ids for every kind: unique, not contiguous, fixed by the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5]))
    return [int(v) + 1 for v in rng.choice(MAX_LANDMARK_ID, size=len(KINDS), replace=False)]


def _render_one(job: tuple[int, int, int, int, str]) -> None:
    seed, kind, index, size, path = job
    atomic_write_bytes(path, render_jpeg(kind, image_rng(seed, kind, index), size))


def check_int(key: str, value: object, lo: int, hi: int | None = None) -> int:
    """`value` as an int if it is a whole number in lo..hi, else a one-line ValueError naming `key`."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < lo or (hi is not None and value > hi):  # type: ignore[operator]
        allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{key}={value!r} is not valid; use {allowed}")
    return int(value)


def generate_dataset(out_dir: Path, *, num_classes: int, images_per_class: int, image_size: int, seed: int,
                     workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render the synthetic dataset into out_dir/images/<id>.jpg and return GLDv2's two tables.

    Returns (train, categories): train has columns id,url,landmark_id (url is the file:// URL of the
    JPEG), shuffled like GLDv2's train.csv; categories has landmark_id,category as in
    train_label_to_category.csv. The same arguments always give byte-identical files.
    """
    num_classes = check_int("synthetic.num_classes", num_classes, 2, len(KINDS))
    images_per_class = check_int("synthetic.images_per_class", images_per_class, 1)
    image_size = check_int("synthetic.image_size", image_size, MIN_IMAGE_SIZE)
    seed = check_int("seed", seed, 0)
    workers = check_int("workers", workers, 1)

    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    lids = landmark_ids(seed)
    rows, jobs = [], []
    for kind in range(num_classes):
        for index in range(images_per_class):
            path = (images / f"{image_id(seed, kind, index)}.jpg").resolve()
            rows.append((path.stem, path.as_uri(), lids[kind]))
            jobs.append((seed, kind, index, image_size, str(path)))
    if len({r[0] for r in rows}) != len(rows):  # 64-bit hashes: never expected, but ids must be unique
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
    return train, categories
