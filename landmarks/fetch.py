"""One big file (the GLDv2 metadata CSVs, the 500 MB test shards), resumable.

`fetch_file` downloads into `<partial_dir>/<name>.part`; an interrupted transfer, in this call or
a killed earlier run, continues from there with an HTTP Range request, and the file appears under
its final name only once complete, with its size checked against the server's and its sha256
against the expected one when given. A connection that stays open but delivers next to nothing
is abandoned by a stall guard (see fetch_file) and resumed on a new one.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from landmarks.files import publish, sha256_file
from landmarks.http import (
    MAX_BACKOFF,
    REQUEST_ERRORS,
    Client,
    FetchError,
    check_status,
    file_url_path,
    iter_body,
    release,
    request_error,
    retry,
)


CONNECT_TIMEOUT = 10.0  # seconds: more patient than for single images (download.connect_timeout)
READ_TIMEOUT = 60.0
STALL_BYTES = 64 * 1024  # an attempt that receives fewer bytes than this ...
STALL_SECONDS = 60.0  # ... in this many seconds (about 1 KiB/s) is abandoned and resumed


def _content_range_total(value: str | None) -> int | None:
    """Total size from a Content-Range header such as `bytes 100-199/1000` or `bytes */1000`."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer_to_part(client: Client, url: str, part: Path, *, timeout: tuple[float, float],
                      stall: tuple[int, float], progress: bool, desc: str) -> int | None:
    """One attempt to complete `part` from `url`, resuming from its current size with a Range request.
    Returns the total size the server announced (None if unknown). Fails with reason `stalled` when
    fewer than stall[0] bytes came in a window of stall[1] seconds (checked as chunks arrive)."""
    offset = _size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = client.get(url, headers=headers, timeout=timeout)
    except REQUEST_ERRORS as e:
        raise request_error(e) from e
    try:
        if resp.status == 416 and offset:
            total = _content_range_total(resp.headers.get("Content-Range"))
            if total == offset:
                return total  # the previous run had already received everything
            part.unlink()  # the part is longer than the file (it changed): start over
            raise FetchError("range_not_satisfiable", url, retryable=True, retry_after=0.0)
        check_status(resp)
        if resp.status == 206:
            start = (resp.headers.get("Content-Range", "").split(" ", 1)[-1].split("-", 1)[0]).strip()
            if start != str(offset):
                part.unlink(missing_ok=True)
                raise FetchError("bad_content_range", resp.headers.get("Content-Range", ""), retryable=True, retry_after=0.0)
            total = _content_range_total(resp.headers.get("Content-Range"))
        else:  # 200: the server ignored Range (or there was nothing to resume): start from zero
            offset = 0
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress, dynamic_ncols=True,
        ) as bar:
            stall_bytes, stall_seconds = stall
            window_end, window_bytes = time.monotonic() + stall_seconds, 0
            for chunk in iter_body(resp):
                f.write(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                if (now := time.monotonic()) >= window_end:
                    if window_bytes < stall_bytes:
                        raise FetchError("stalled", f"{window_bytes} bytes in {stall_seconds:g} s", retryable=True)
                    window_end, window_bytes = now + stall_seconds, 0
        return total
    finally:
        release(resp)


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    user_agent: str,
    partial_dir: str | Path | None = None,
    expected_sha256: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    max_retries: int = 5,
    backoff: float = 1.0,
    stall_bytes: int = STALL_BYTES,
    stall_seconds: float = STALL_SECONDS,
    progress: bool = True,
) -> dict[str, Any]:
    """Download `url` (http, https or file) to `dest`; return {"url", "size", "sha256"}.

    Bytes arrive in `<partial_dir>/<dest name>.part` (default: beside dest); an interrupted
    transfer, in this call or a killed earlier run, resumes from there with an HTTP Range request.
    `dest` appears only once complete, with its size checked against the server's and its sha256
    against `expected_sha256` when given. Retries restart their count whenever bytes arrived,
    so a long transfer over a flaky link keeps going as long as it makes progress.

    Every request names us with `user_agent` (params.yaml's download.user_agent: the caller
    passes it; there is deliberately no default, so no fetch goes out anonymous).

    Slow servers: read_timeout ends a read that gets no byte at all, but a server that keeps the
    connection open and drips a few bytes a second would hold the stage for days. Single images
    get a total deadline for that (download.deadline); a total deadline does not fit here: a
    500 MB shard over a slow but healthy link may rightly take hours, so any bound generous
    enough for it would not catch a drip before it had wasted those hours. Instead a stall guard
    judges the rate, whatever the size: an attempt that receives fewer than `stall_bytes` in
    `stall_seconds` (default 64 KiB in 60 s, about 1 KiB/s) is abandoned with reason `stalled`
    and retried on a new connection, resuming from the bytes it got. A stalled attempt counts as
    progress only if it received at least `stall_bytes` before it stalled, so a server that only
    ever drips fails after max_retries stalls instead of trickling on forever.
    """
    dest = Path(dest)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise FetchError("disallowed_scheme", f"cannot fetch {url!r}: use http://, https:// or file://")
    part_dir = Path(partial_dir) if partial_dir is not None else dest.parent
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / f"{dest.name}.part"
    if scheme == "file":
        src = file_url_path(url)
        if not src.is_file():
            raise FetchError("file_not_found", str(src))
        try:
            shutil.copyfile(src, part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        total: int | None = _size(part)
    else:
        client = Client(user_agent, pool_size=1)
        before = 0

        def attempt() -> int | None:
            nonlocal before
            before = _size(part)
            return _transfer_to_part(client, url, part, timeout=(connect_timeout, read_timeout),
                                     stall=(stall_bytes, stall_seconds), progress=progress, desc=dest.name)

        def log_retry(e: FetchError, delay: float) -> None:
            print(f"fetch: {dest.name}: {e}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)

        def progressed(e: FetchError) -> bool:  # bytes arrived: a flaky link, not a dead one
            return _size(part) - before >= (stall_bytes if e.reason == "stalled" else 1)

        total = retry(attempt, max_retries=max_retries, backoff=backoff, max_backoff=MAX_BACKOFF,
                      progressed=progressed, on_retry=log_retry)

    size = _size(part)
    if total is not None and size != total:
        part.unlink()
        raise FetchError("size_mismatch", f"{url}: got {size} bytes, server announced {total}")
    digest = sha256_file(part)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise FetchError("sha256_mismatch", f"{url}: sha256 {digest}, expected {expected_sha256}")
    publish(part, dest)
    return {"url": url, "size": size, "sha256": digest}
