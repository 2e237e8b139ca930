"""Choosing which landmarks and images to download: clean the rows, keep big classes, sample.

Row cleaning (every dropped row is counted under one reason, the first that applies):
  invalid_id               id is not 16 lower-case hex digits (it becomes a file name)
  invalid_landmark_id      landmark_id missing, not an integer, or negative
  invalid_url              url empty
  disallowed_scheme        url scheme not allowed (gldv2: http/https; synthetic/folder also file)
  duplicate_id             a repeat of an id already seen with the same landmark (the first is kept)
  conflicting_duplicate_id every row of an id that appears with two different landmarks: we
                           cannot tell which label is right, so none is used
Class selection: keep landmarks with MORE THAN `min_images_per_class` valid rows. With
`max_classes`, keep the landmarks with the most valid rows (ties: smaller landmark_id first), so
the cap keeps the best-populated classes. Within each class, keep at most `max_images_per_class`
rows: those with the smallest seeded hash of their id. A hash of the id (not a random draw over
row positions) makes the sample independent of row order and of unrelated rows.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from landmarks.gldv2 import NO_LANDMARK_ID, category_name

DROP_REASONS = (
    "invalid_id",
    "invalid_landmark_id",
    "invalid_url",
    "disallowed_scheme",
    "duplicate_id",
    "conflicting_duplicate_id",
)

_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


@dataclass
class Selection:
    """What select_classes chose, and why rows were left out."""

    selected: pd.DataFrame  # id, url, landmark_id
    classes: pd.DataFrame  # landmark_id, name, category, <extra category columns>, num_available, num_selected
    dropped: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


def parse_hex_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse 16-hex-digit id strings into uint64 values; return (values, valid mask).

    Vectorised (one join and a lookup table) because a per-row regex over the 4.1M-row GLDv2
    file costs seconds. Invalid ids get value 0 and valid=False.
    """
    n = len(ids)
    values = np.zeros(n, dtype=np.uint64)
    valid = np.zeros(n, dtype=bool)
    lengths = np.fromiter((len(s) if isinstance(s, str) else -1 for s in ids), dtype=np.int64, count=n)
    rows = np.flatnonzero(lengths == 16)
    try:
        raw = "".join(ids[rows]).encode("ascii")
    except UnicodeEncodeError:  # a non-ASCII id: encode row by row, marking those invalid
        raw = b"".join(s.encode("ascii", errors="replace") for s in ids[rows])
    digits = _HEX_VALUE[np.frombuffer(raw, dtype=np.uint8).reshape(-1, 16)]
    ok = (digits < 16).all(axis=1)
    acc = np.zeros(len(rows), dtype=np.uint64)
    for col in range(16):
        acc = (acc << np.uint64(4)) | digits[:, col].astype(np.uint64)
    values[rows[ok]] = acc[ok]
    valid[rows[ok]] = True
    return values, valid


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(id_values: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per id; rows with the smallest keys are sampled first."""
    salt = _mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return _mix64(id_values ^ salt)


def check_urls(urls: np.ndarray, allowed_schemes: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (url is a non-empty str, its scheme is allowed)."""
    allowed = {s.lower() for s in allowed_schemes}
    prefixes = tuple(f"{s}://" for s in allowed)
    present = np.ones(len(urls), dtype=bool)
    try:  # the common case, one cheap pass: every url a str with a lower-case allowed scheme
        scheme_ok = np.fromiter((u.startswith(prefixes) for u in urls), dtype=bool, count=len(urls))
    except AttributeError:  # a non-str (NaN) url in a DataFrame built by hand
        scheme_ok = np.fromiter((isinstance(u, str) and u.startswith(prefixes) for u in urls),
                                dtype=bool, count=len(urls))
    # Re-check the rare misses properly: schemes are case-insensitive (RFC 3986).
    for i in np.flatnonzero(~scheme_ok):
        u = urls[i]
        present[i] = isinstance(u, str) and u != ""
        scheme_ok[i] = present[i] and urlsplit(u).scheme.lower() in allowed
    return present, scheme_ok


@dataclass
class CleanRows:
    """The valid rows, reduced to compact arrays (the id strings are re-created only for the output)."""

    ids: np.ndarray  # uint64 value of each 16-hex id
    landmark: np.ndarray  # int64
    urls: np.ndarray  # object (str)
    rows_read: int
    dropped: dict[str, int]


def _clean_chunk(
    chunk: pd.DataFrame, allowed_schemes: Collection[str], dropped: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The valid rows of one chunk as (uint64 ids, int64 landmarks, urls); adds to `dropped`."""
    ids = chunk["id"].to_numpy(dtype=object)
    urls = chunk["url"].to_numpy(dtype=object)
    id_values, keep = parse_hex_ids(ids)
    dropped["invalid_id"] += int((~keep).sum())

    # float64 holds every GLDv2 landmark id exactly and turns <NA>/text into NaN in one step.
    landmark = pd.to_numeric(chunk["landmark_id"], errors="coerce").astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):
        bad = keep & ~((landmark >= 0) & (landmark == np.floor(landmark)))
    dropped["invalid_landmark_id"] += int(bad.sum())
    keep &= ~bad

    present, scheme_ok = check_urls(urls, allowed_schemes)
    bad = keep & ~present
    dropped["invalid_url"] += int(bad.sum())
    keep &= ~bad
    bad = keep & ~scheme_ok
    dropped["disallowed_scheme"] += int(bad.sum())
    keep &= ~bad

    rows = np.flatnonzero(keep)
    return id_values[rows], landmark[rows].astype(np.int64), urls[rows]


def clean_rows(chunks: Iterable[pd.DataFrame], allowed_schemes: Collection[str]) -> CleanRows:
    """Drop invalid, disallowed and duplicate rows (see the module docstring), counting each reason."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    parts, rows_read = [], 0
    for chunk in chunks:
        rows_read += len(chunk)
        parts.append(_clean_chunk(chunk, allowed_schemes, dropped))
    if parts:
        ids, landmark, urls = (np.concatenate(p) for p in zip(*parts))
    else:
        ids, landmark, urls = np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, object)
    del parts

    sorted_ids = np.sort(ids)  # a sort finds whether any id repeats ~2x faster than hashing
    if (sorted_ids[1:] == sorted_ids[:-1]).any():
        dup = pd.Series(ids).duplicated(keep=False).to_numpy()
        d = pd.DataFrame({"id": ids[dup], "lm": landmark[dup], "row": np.flatnonzero(dup)})
        conflict = (d.groupby("id")["lm"].transform("nunique") > 1).to_numpy()
        repeat = ~conflict & d.duplicated("id", keep="first").to_numpy()
        dropped["conflicting_duplicate_id"] = int(conflict.sum())
        dropped["duplicate_id"] = int(repeat.sum())
        keep = np.ones(len(ids), dtype=bool)
        keep[d["row"].to_numpy()[conflict | repeat]] = False
        ids, landmark, urls = ids[keep], landmark[keep], urls[keep]
    return CleanRows(ids=ids, landmark=landmark, urls=urls, rows_read=rows_read, dropped=dropped)


def choose_classes(counts: pd.Series, min_images_per_class: int, max_classes: int | None) -> np.ndarray:
    """Landmark ids with more than `min_images_per_class` images; with `max_classes`, the biggest ones."""
    eligible = counts[counts > min_images_per_class]
    order = np.lexsort((eligible.index.to_numpy(), -eligible.to_numpy()))  # most images first, then id
    chosen = eligible.index.to_numpy()[order]
    if max_classes is not None:
        chosen = chosen[:max_classes]
    return np.sort(chosen)


def sample_per_class(landmark: np.ndarray, keys: np.ndarray, max_per_class: int | None) -> np.ndarray:
    """Row indices to keep: at most `max_per_class` per landmark, the ones with the smallest keys."""
    order = np.lexsort((keys, landmark))
    if max_per_class is None:
        return np.sort(order)
    sorted_lm = landmark[order]
    starts = np.flatnonzero(np.r_[True, sorted_lm[1:] != sorted_lm[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    return np.sort(order[rank < max_per_class])


def class_table(landmark_ids: np.ndarray, categories: pd.DataFrame, available: pd.Series, selected: pd.Series) -> pd.DataFrame:
    """One row per landmark: id, readable name, category and its extra columns, image counts."""
    cats = categories.drop_duplicates("landmark_id", keep="first").set_index("landmark_id")
    extra = [c for c in cats.columns if c != "category"]
    table = cats.reindex(landmark_ids)
    table = table.astype(object).where(table.notna(), "")  # landmarks missing from the category table
    names = [
        category_name(c) if isinstance(c, str) and c.strip() else f"landmark {lid}"
        for lid, c in zip(landmark_ids, table["category"])
    ]
    out = pd.DataFrame({"landmark_id": landmark_ids.astype(np.int64), "name": names,
                        "category": table["category"].to_numpy()})
    for col in extra:
        out[col] = table[col].to_numpy()
    out["num_available"] = available.reindex(landmark_ids, fill_value=0).to_numpy().astype(np.int64)
    out["num_selected"] = selected.reindex(landmark_ids, fill_value=0).to_numpy().astype(np.int64)
    return out


def select_classes(
    train: pd.DataFrame | Iterable[pd.DataFrame],
    categories: pd.DataFrame,
    *,
    min_images_per_class: int,
    max_images_per_class: int | None,
    max_classes: int | None,
    seed: int,
    allowed_schemes: Collection[str],
) -> Selection:
    """Clean `train` (a DataFrame, or an iterable of chunks), keep the landmarks with more than
    `min_images_per_class` rows (at most `max_classes`, the biggest), and sample at most
    `max_images_per_class` rows of each from `seed` (None: no limit).

    `selected` is sorted by (landmark_id, id), so it depends only on the set of input rows.
    """
    if min_images_per_class < 0:
        raise ValueError(f"min_images_per_class={min_images_per_class} must be >= 0")
    if max_images_per_class is not None and max_images_per_class < 1:
        raise ValueError(f"max_images_per_class={max_images_per_class} must be >= 1 or None")
    if max_classes is not None and max_classes < 1:
        raise ValueError(f"max_classes={max_classes} must be >= 1 or None")

    chunks = [train] if isinstance(train, pd.DataFrame) else train
    rows = clean_rows(chunks, allowed_schemes)
    landmark = rows.landmark
    available = pd.Series(landmark).value_counts(sort=False)
    chosen = choose_classes(available, min_images_per_class, max_classes)

    in_chosen = np.flatnonzero(np.isin(landmark, chosen))
    keys = sample_keys(rows.ids[in_chosen], seed)
    take = in_chosen[sample_per_class(landmark[in_chosen], keys, max_images_per_class)]
    # Final order: by landmark, then by id (its uint64 value sorts like the hex string).
    take = take[np.lexsort((rows.ids[take], landmark[take]))]
    selected = pd.DataFrame({
        "id": [f"{v:016x}" for v in rows.ids[take].tolist()],  # exactly the input text: valid ids are lower-case
        "url": rows.urls[take],
        "landmark_id": landmark[take],
    })

    per_class = pd.Series(selected["landmark_id"].to_numpy()).value_counts(sort=False)
    classes = class_table(chosen, categories, available, per_class)
    known = set(categories["landmark_id"].tolist())
    stats = {
        "rows_read": rows.rows_read,
        "rows_valid": len(landmark),
        "rows_dropped": int(sum(rows.dropped.values())),
        "landmarks_available": int(len(available)),
        "landmarks_eligible": int((available > min_images_per_class).sum()),
        "classes_selected": int(len(chosen)),
        "rows_selected": int(len(selected)),
        "classes_without_category": int(sum(1 for c in chosen.tolist() if c not in known)),
    }
    return Selection(selected=selected, classes=classes, dropped=rows.dropped, stats=stats)


# Distractor lists are written by fetch_csv itself (file:// URLs into data/raw for rendered or
# extracted photos), so local files are allowed for them whatever the dataset.
DISTRACTOR_SCHEMES = ("http", "https", "file")


def select_distractors(
    distractors: pd.DataFrame, *, landmark_ids: Collection[str], max_distractors: int | None, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean the distractor rows (id,url) and sample at most `max_distractors` by seeded id hash.

    Returns rows (id, url, landmark_id=NO_LANDMARK_ID) sorted by id, and the drop counts: invalid_id,
    invalid_url, disallowed_scheme, duplicate_id, and also_a_landmark (an id that is a landmark photo
    too: it cannot be both a positive and a negative).
    """
    if max_distractors is not None and max_distractors < 0:
        raise ValueError(f"max_distractors={max_distractors} must be >= 0 or None")
    ids = distractors["id"].to_numpy(dtype=object)
    urls = distractors["url"].to_numpy(dtype=object)
    values, keep = parse_hex_ids(ids)
    dropped = {"invalid_id": int((~keep).sum())}
    present, scheme_ok = check_urls(urls, DISTRACTOR_SCHEMES)
    dropped["invalid_url"] = int((keep & ~present).sum())
    keep &= present
    dropped["disallowed_scheme"] = int((keep & ~scheme_ok).sum())
    keep &= scheme_ok
    # Repeats are judged among the valid rows only: an invalid row must not shadow a valid one.
    first = np.zeros(len(ids), dtype=bool)
    valid = np.flatnonzero(keep)
    first[valid] = ~pd.Series(values[valid]).duplicated().to_numpy()
    dropped["duplicate_id"] = int((keep & ~first).sum())
    keep &= first
    clash = np.isin(ids, np.asarray(list(landmark_ids), dtype=object))
    dropped["also_a_landmark"] = int((keep & clash).sum())
    keep &= ~clash
    rows = np.flatnonzero(keep)
    if max_distractors is not None and len(rows) > max_distractors:
        rows = rows[np.argsort(sample_keys(values[rows], seed), kind="stable")[:max_distractors]]
    rows = rows[np.argsort(values[rows], kind="stable")]
    out = pd.DataFrame({"id": ids[rows].astype(str), "url": urls[rows], "landmark_id": NO_LANDMARK_ID})
    return out, dropped
