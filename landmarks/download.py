"""Many images in parallel: every row of the selection ends as a stored image or as a failure.

Each image is fetched over landmarks.http (one pooled client, separate connect/read timeouts,
retries with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx,
Retry-After honoured up to a cap) within a total deadline (`download.deadline`: no server holds
a worker longer, however slowly it drips its bytes), size-limited, redirect-checked, fully
decoded (decompression-bomb limit), resized and stored atomically as
`<images>/<landmark_id>/<id>.jpg`. Every row ends as an image or as a failure with a short
reason; nothing is dropped silently. Images already stored are skipped, so a killed run resumes.

Decoding, resizing and encoding cost more CPU than the requests (and the HTTP client's Python
holds the GIL), so with more than one usable core the rows are spread over worker processes
(`download.processes`, landmarks.workers), each keeping its share of the `download.workers`
requests in flight over its own client; the results come back to one progress bar and one
DownloadResult, the same as from one process.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pandas as pd
from tqdm import tqdm

from landmarks.files import atomic_write_bytes
from landmarks.gldv2 import NO_LANDMARK_ID, image_path, is_valid_id
from landmarks.http import (
    MAX_BACKOFF,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    REQUEST_ERRORS,
    Client,
    Deadline,
    FetchError,
    check_status,
    file_url_path,
    iter_body,
    release,
    request_error,
    retry,
)
from landmarks.imageio import ImageError, decode_image, encode_jpeg, resize_shorter
from landmarks.params import DownloadParams
from landmarks.workers import resolve_processes, run_in_processes, run_in_threads

FAILURE_COLUMNS = ("id", "url", "landmark_id", "reason")
# Redirects may only lead to the web: a `file://` or `ftp://` Location from a remote server must
# never make us read local files or speak other protocols.
REDIRECT_SCHEMES = ("http", "https")
# Distractor rows come from fetch_csv's own list (rendered or extracted files in data/raw).
DISTRACTOR_SCHEMES = ("http", "https", "file")
# Threads per process beyond its share of download.workers (the requests in flight). A thread that
# has its bytes decodes, resizes and stores them outside the fetch semaphore, so another starts the
# next request meanwhile: the network keeps download.workers requests in flight while the CPU works.
FETCH_SLACK = 2


# ---------------------------------------------------------------------------------------------
# One image


def _get_once(client: Client, url: str, cfg: DownloadParams, deadline: Deadline) -> bytearray:
    """One attempt: GET `url` following at most MAX_REDIRECTS http(s) redirects, read at most
    max_bytes, all before `deadline`."""
    for _ in range(MAX_REDIRECTS + 1):
        timeout = deadline.timeouts(cfg.connect_timeout, cfg.read_timeout)
        try:
            resp = client.get(url, timeout=timeout)
        except REQUEST_ERRORS as e:
            raise request_error(e) from e
        try:
            if resp.status in REDIRECT_STATUSES and "Location" in resp.headers:
                # Followed by hand so that every hop's scheme is checked before it is requested.
                try:
                    url = urljoin(url, resp.headers["Location"])
                    scheme = urlsplit(url).scheme.lower()
                except ValueError as e:
                    raise FetchError("bad_redirect", str(e)) from e
                if scheme not in REDIRECT_SCHEMES:
                    raise FetchError("bad_redirect_scheme", url)
                continue
            check_status(resp)
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cfg.max_bytes:
                raise FetchError("max_bytes_exceeded", f"Content-Length {length} > {cfg.max_bytes}")
            return _read_body(iter_body(resp, deadline, timeout[1]), cfg.max_bytes)
        finally:
            release(resp)
    raise FetchError("too_many_redirects", f"more than {MAX_REDIRECTS}")


def _read_body(chunks: Iterator[bytes], max_bytes: int) -> bytearray:
    """The whole body, aborting as soon as it passes `max_bytes` (a missing or lying Content-Length)."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:
            raise FetchError("max_bytes_exceeded", f"body > {max_bytes} bytes")
    return data


def fetch_image_bytes(client: Client, url: str, cfg: DownloadParams, schemes: tuple[str, ...],
                      max_backoff: float = MAX_BACKOFF) -> bytearray:
    """The bytes behind `url` (http, https or file, as `schemes` permit), with retries (no wait longer than
    `max_backoff`, Retry-After included), all within cfg.deadline seconds."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in schemes:
        raise FetchError("disallowed_scheme", scheme or "(none)")
    if scheme == "file":
        return read_local_file(url, cfg.max_bytes)
    deadline = Deadline(cfg.deadline)
    return retry(lambda: _get_once(client, url, cfg, deadline), max_retries=cfg.max_retries,
                 backoff=cfg.backoff, max_backoff=max_backoff, deadline=deadline)


def read_local_file(url: str, max_bytes: int) -> bytearray:
    """The bytes of a file:// URL, refusing files larger than `max_bytes`."""
    path = file_url_path(url)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_bytes:
                raise FetchError("max_bytes_exceeded", str(path))
            return bytearray(f.read())
    except FileNotFoundError as e:
        raise FetchError("file_not_found", str(path)) from e
    except OSError as e:  # a directory, no permission, an I/O error: the file cannot be used
        raise FetchError("unreadable", f"{path}: {e}") from e


def download_one(client: Client, url: str, target: Path, cfg: DownloadParams, schemes: tuple[str, ...],
                 max_backoff: float = MAX_BACKOFF,
                 slots: contextlib.AbstractContextManager = contextlib.nullcontext()) -> str | None:
    """Fetch, validate, resize and store one image. Returns None on success, else the failure reason.

    The fetch runs inside `slots` (a semaphore shared by the threads: see FETCH_SLACK).
    Errors writing `target` (disk full, permissions) are not bad data and propagate.
    """
    try:
        with slots:
            data = fetch_image_bytes(client, url, cfg, schemes, max_backoff)
        # One full decode: validates the content, applies the pixel limit and EXIF orientation;
        # draft_size lets libjpeg decode big photos at a reduced scale directly.
        img = decode_image(data, max_pixels=cfg.max_pixels, draft_size=cfg.image_size)
        del data
        jpeg = encode_jpeg(resize_shorter(img, cfg.image_size))
    except (FetchError, ImageError) as e:
        return e.reason
    except Exception as e:  # never let one strange response stop the whole download
        _log_unexpected(url, e)
        return "unexpected_error"
    atomic_write_bytes(target, jpeg)
    return None


def _image_task(cfg: DownloadParams, max_backoff: float, threads: int) -> Callable[[tuple], str | None]:
    """download_one for `threads` threads of one process: (url, target, schemes) -> reason, over the
    process's own client (connections cannot be shared between processes), with all but
    FETCH_SLACK of the threads' requests in flight at once."""
    client = Client(cfg.user_agent, threads)
    slots = threading.BoundedSemaphore(max(1, threads - FETCH_SLACK))
    return lambda task: download_one(client, task[0], task[1], cfg, task[2], max_backoff, slots)


_unexpected_lock = threading.Lock()
_unexpected_seen = 0


def _log_unexpected(url: str, exc: Exception) -> None:
    global _unexpected_seen
    with _unexpected_lock:
        _unexpected_seen += 1
        if _unexpected_seen <= 5:  # per process: enough to diagnose without flooding the log
            print(f"download: unexpected {type(exc).__name__} for {url}: {exc}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Many images


@dataclass
class DownloadResult:
    """What download_images did. `images_per_class` counts usable images (downloaded + already present) of
    each landmark; distractors are not a class and are not counted there."""

    selected: int
    downloaded: int
    already_present: int
    removed: int  # files deleted from the images folder: not in the selection, or leftover temp files
    failures: pd.DataFrame  # FAILURE_COLUMNS, in input order
    images_per_class: dict[int, int] = field(default_factory=dict)
    distractors: int = 0  # usable distractor photos

    @property
    def failures_by_reason(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.failures["reason"].value_counts().sort_index().items()}


def prune_images(images_dir: Path, keep: set[Path]) -> int:
    """Delete every file under `images_dir` that is not in `keep` (stale classes, a killed run's
    temp files) and then empty folders. Returns the number of files deleted."""
    removed = 0
    if not images_dir.is_dir():
        return 0
    for root, dirs, files in os.walk(images_dir, topdown=False):
        root_path = Path(root)
        for name in files:
            path = root_path / name
            if path not in keep:
                path.unlink()
                removed += 1
        for name in dirs:
            sub = root_path / name
            if sub.is_symlink():
                continue
            try:
                sub.rmdir()  # only succeeds when empty
            except OSError:
                pass
    return removed


def _parse_landmark_id(value: Any) -> int | None:
    """A landmark id >= 0, or NO_LANDMARK_ID for a distractor; None for anything else."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return value if value >= 0 or value == NO_LANDMARK_ID else None
    text = str(value).strip()
    if text == str(NO_LANDMARK_ID):
        return NO_LANDMARK_ID
    return int(text) if text.isdigit() and text.isascii() else None


def row_schemes(landmark_id: int | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """URL schemes a row may use: the dataset's for landmark photos, DISTRACTOR_SCHEMES for distractors."""
    return DISTRACTOR_SCHEMES if landmark_id == NO_LANDMARK_ID else allowed


def plan_rows(rows: pd.DataFrame, images_dir: Path, allowed_schemes: tuple[str, ...]) -> tuple[list[Path | None], list[str | None]]:
    """For each row its target path and, for rows that cannot be downloaded at all, the reason."""
    targets: list[Path | None] = []
    reasons: list[str | None] = []
    seen: set[Path] = set()
    for image_id, url, landmark in zip(rows["id"], rows["url"], rows["landmark_id"]):
        lid = _parse_landmark_id(landmark)
        reason = None
        if not is_valid_id(image_id):
            reason = "invalid_id"  # checked before the id becomes part of a path
        elif lid is None:
            reason = "invalid_landmark_id"
        elif not isinstance(url, str) or not url:
            reason = "invalid_url"
        else:
            try:
                if urlsplit(url).scheme.lower() not in row_schemes(lid, allowed_schemes):
                    reason = "disallowed_scheme"
            except ValueError:  # e.g. an unbalanced "[" in the host
                reason = "invalid_url"
        target = None if reason else image_path(images_dir, lid, image_id)
        if target is not None and target in seen:
            reason, target = "duplicate_id", None
        if target is not None:
            seen.add(target)
        targets.append(target)
        reasons.append(reason)
    return targets, reasons


def download_images(
    rows: pd.DataFrame,
    images_dir: Path,
    cfg: DownloadParams,
    *,
    allowed_schemes: tuple[str, ...] = ("http", "https"),
    max_backoff: float = MAX_BACKOFF,
    progress: bool = True,
) -> DownloadResult:
    """Make every row of `rows` (id, url, landmark_id) an image under `images_dir` or a failure.

    Landmark rows may use `allowed_schemes` (the dataset's), distractor rows DISTRACTOR_SCHEMES.
    Files already at their target are kept (atomic writes mean they are complete); files in
    `images_dir` that no row targets are deleted first. The work runs in cfg.processes worker
    processes (fewer for a few rows), each with cfg.workers / processes requests in flight.
    """
    images_dir = Path(images_dir)
    rows = rows.reset_index(drop=True)
    unknown = set(allowed_schemes) - set(DISTRACTOR_SCHEMES)
    if unknown:
        raise ValueError(f"allowed_schemes={allowed_schemes!r} is not valid; use http, https, file")
    targets, reasons = plan_rows(rows, images_dir, allowed_schemes)
    removed = prune_images(images_dir, {t for t in targets if t is not None})
    present = [t is not None and t.is_file() for t in targets]
    todo = [i for i, t in enumerate(targets) if t is not None and not present[i]]

    urls = rows["url"].tolist()
    schemes = [row_schemes(_parse_landmark_id(v), allowed_schemes) for v in rows["landmark_id"]]
    processes = min(resolve_processes(cfg.processes, cfg.workers), max(1, len(todo)))
    threads = cfg.workers + FETCH_SLACK * processes  # every process gets its share and the slack
    if processes == 1:
        task = _image_task(cfg, max_backoff, threads)
        results = run_in_threads(todo, lambda i: task((urls[i], targets[i], schemes[i])), threads)
    else:  # started here, before the progress bar starts its monitor thread
        results = run_in_processes(((i, (urls[i], targets[i], schemes[i])) for i in todo), _image_task,
                                   (cfg, max_backoff), processes=processes, threads=threads, pin=True)
    failed = sum(r is not None for r in reasons)
    downloaded = 0
    # closing: on Ctrl-C or an error the workers end here, not whenever the iterator is collected.
    with contextlib.closing(results), tqdm(total=len(rows), initial=len(rows) - len(todo) - failed, unit="img",
                                           desc="download", disable=not progress, smoothing=0.05,
                                           dynamic_ncols=True) as bar:
        bar.set_postfix(failed=failed, refresh=False)
        for i, reason in results:
            reasons[i] = reason
            if reason is None:
                downloaded += 1
            else:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

    failed_rows = [i for i, r in enumerate(reasons) if r is not None]
    failures = rows.loc[failed_rows, ["id", "url", "landmark_id"]].copy()
    failures["reason"] = [reasons[i] for i in failed_rows]
    usable: dict[int, int] = {}
    for landmark, reason in zip(rows["landmark_id"], reasons):
        lid = _parse_landmark_id(landmark)
        if lid is not None:
            usable[lid] = usable.get(lid, 0) + (reason is None)
    distractors = usable.pop(NO_LANDMARK_ID, 0)
    return DownloadResult(
        selected=len(rows), downloaded=downloaded, already_present=sum(present), removed=removed,
        failures=failures.reset_index(drop=True), images_per_class=usable, distractors=distractors,
    )

