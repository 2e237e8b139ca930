"""GLDv2's distractors: the non-landmark photos of its test set, read from the official TAR shards.

The recognition solution (`recognition_solution_v2.1.csv`, columns `id,landmarks,Usage`) leaves
`landmarks` empty for test photos that show no landmark. The photos themselves come only in 20 TAR
shards of a few hundred MB (`test/images_000.tar` ...), members named `a/b/c/abc0123456789def.jpg`;
which id is in which shard is known only by reading the shard. So for each shard asked for:

1. fetch it resumably (landmarks.fetch.fetch_file: bytes wait in `<partial>/<name>.part`, a
   killed run continues with an HTTP Range request; a shard fully downloaded by a run killed
   during extraction is moved back to `.part`, so the rerun's Range request only confirms its
   size, 416, instead of downloading it again); a file:// shard is read in place;
2. stream through it member by member (tarfile mode "r|": no seeking, no extraction by name):
   member names are never used as paths, only their basename's id is, after validation;
3. write each non-landmark photo's raw bytes atomically to `<images>/<id>.jpg`;
4. delete the downloaded shard (it is big; the extracted photos are what later stages use).
"""
from __future__ import annotations

import shutil
import sys
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from landmarks.fetch import fetch_file
from landmarks.files import atomic_write_bytes, sha256_file
from landmarks.gldv2 import DISTRACTOR_COLUMNS, is_valid_id
from landmarks.http import FetchError, file_url_path
from landmarks.params import NUM_TEST_SHARDS

SOLUTION_COLUMNS = ("id", "landmarks")
# Per-member limit, as download.max_bytes for single images (fetch_csv reads only
# download.user_agent, so that changing the image settings does not re-fetch the metadata).
MAX_MEMBER_BYTES = 50 * 2**20

# Why a member of a shard was not kept (keys of ShardStats.skipped, in log order).
SKIP_REASONS = {
    "landmark_image": "landmark images",
    "not_in_solution": "not in the solution",
    "duplicate": "duplicates",
    "invalid_name": "invalid names",
    "oversize": f"over {MAX_MEMBER_BYTES // 2**20} MiB",
    "directory": "directories",
    "not_regular_file": "links or other non-regular files",
}


class DistractorError(Exception):
    """A distractor source that cannot be used (fetch failed, not a solution CSV, not a tar): one line."""


@dataclass(frozen=True)
class DistractorSource:
    """Validated params: where the solution and the shards to fetch are."""

    solution_url: str
    shard_urls: tuple[str, ...]


def distractor_source(solution_url: str, shard_template: str, shards: int) -> DistractorSource:
    """Where the solution and the first `shards` shards are (`shard_template` has a {shard} field)."""
    return DistractorSource(solution_url, tuple(shard_template.format(shard=i) for i in range(shards)))


# ---------------------------------------------------------------------------------------------
# The solution CSV


@dataclass
class Solution:
    """The test set's ground truth: which ids show no landmark, which show one."""

    non_landmark: set[str]
    landmark: set[str]
    rows: int
    invalid: int  # rows dropped because their id is not 16 lower-case hex digits


def read_solution(path: str | Path) -> Solution:
    """Read recognition_solution_v2.1.csv: `landmarks` empty (or blank) means no landmark."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, engine="c")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DistractorError(f"{path}: not a CSV ({e})") from None
    missing = [c for c in SOLUTION_COLUMNS if c not in df.columns]
    if missing:
        raise DistractorError(f"{path} is not a GLDv2 recognition solution: missing column(s) {', '.join(missing)}")
    valid = df["id"].map(is_valid_id)
    empty = df["landmarks"].str.strip() == ""
    return Solution(non_landmark=set(df.loc[valid & empty, "id"]), landmark=set(df.loc[valid & ~empty, "id"]),
                    rows=len(df), invalid=int((~valid).sum()))


# ---------------------------------------------------------------------------------------------
# One shard


@dataclass
class ShardStats:
    members: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{self.skipped[k]:,} {text}" for k, text in SKIP_REASONS.items() if self.skipped[k])
        return f"{self.members:,} members, kept {self.kept:,}" + (f"; skipped {skipped}" if skipped else "")


def member_id(name: str) -> str | None:
    """The image id a member name stands for (`a/b/c/abc0123456789def.jpg` -> `abc0123456789def`), or
    None: the basename must be `<16 lower-case hex>.jpg`, and a name that is absolute or climbs
    with `..` (never seen in a real shard: a crafted archive) is refused outright."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or path.suffix.lower() != ".jpg":
        return None
    return path.stem if is_valid_id(path.stem) else None


def extract_shard(tar_path: str | Path, solution: Solution, images_dir: Path, kept: set[str], *,
                  max_bytes: int = MAX_MEMBER_BYTES) -> ShardStats:
    """Stream through a tar and write the members that are non-landmark photos to `images_dir/<id>.jpg`.

    `kept` holds the ids written so far (across shards); new ones are added. Raises
    tarfile.TarError (or EOFError) for an archive that cannot be read to its end.
    """
    stats = ShardStats()
    images_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, mode="r|") as tar:
        for member in tar:
            stats.members += 1
            if member.isdir():
                reason = "directory"
            elif not member.isreg():  # symlinks, hard links, devices, fifos
                reason = "not_regular_file"
            elif (image_id := member_id(member.name)) is None:
                reason = "invalid_name"
            elif image_id in solution.landmark:
                reason = "landmark_image"
            elif image_id not in solution.non_landmark:
                reason = "not_in_solution"
            elif image_id in kept:
                reason = "duplicate"
            elif member.size > max_bytes:
                reason = "oversize"
            else:
                reason = None
            if reason is not None:
                stats.skipped[reason] += 1
                continue  # the stream skips the member's data on the next iteration
            source = tar.extractfile(member)
            data = source.read(max_bytes + 1) if source is not None else b""
            if len(data) != member.size:  # read() stops short only at a truncated archive
                raise tarfile.ReadError(f"member {member.name!r}: {len(data)} of {member.size} bytes")
            atomic_write_bytes(images_dir / f"{image_id}.jpg", data)
            kept.add(image_id)
            stats.kept += 1
    return stats


def fetch_shard(url: str, dest: Path, partial: Path, *, user_agent: str,
                progress: bool = True) -> tuple[dict[str, Any], Path, bool]:
    """Make shard `url` readable locally: (its {url, size, sha256}, its path, whether that path is our
    copy, to delete after extraction).

    http(s): fetch_file into `dest` (inside `partial`), resuming a `.part`; a complete `dest` that a
    run killed during extraction left goes back to `.part`, where fetch_file's Range request finds
    it complete (416) and only checks its size and hashes it. file://: read in place, no copy.
    """
    if urlsplit(url).scheme.lower() == "file":
        src = file_url_path(url)
        if not src.is_file():
            raise FetchError("file_not_found", str(src))
        return {"url": url, "size": src.stat().st_size, "sha256": sha256_file(src)}, src, False
    part = partial / f"{dest.name}.part"
    if dest.is_file():
        dest.replace(part)
    return fetch_file(url, dest, partial_dir=partial, user_agent=user_agent, progress=progress), dest, True


# ---------------------------------------------------------------------------------------------
# The whole job


def _default_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_distractors(source: DistractorSource, out: Path, partial: Path, *, solution_name: str, user_agent: str,
                      images_name: str = "distractors", progress: bool = True,
                      log: Callable[[str], None] = _default_log) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Fetch the solution into `out/<solution_name>` and the non-landmark photos of the shards into
    `out/<images_name>/`. Returns the distractor rows (DISTRACTOR_COLUMNS, sorted by id, file:// URLs)
    and manifest entries {name: {source, size, sha256}} for the solution and each shard. Every
    request names us with `user_agent`."""
    images_dir = out / images_name
    if images_dir.exists():
        shutil.rmtree(images_dir)  # only this run's photos, whatever an earlier run with other params left
    rows = pd.DataFrame({c: pd.Series(dtype=object) for c in DISTRACTOR_COLUMNS})
    if not source.shard_urls:
        log("fetch_csv: gldv2.distractor_shards=0: no distractors")
        return rows, {}
    files: dict[str, dict[str, Any]] = {}
    log(f"fetch_csv: {source.solution_url} -> {out / solution_name}")
    record = _fetch("gldv2.solution_url", source.solution_url, fetch_file, source.solution_url, out / solution_name,
                    partial_dir=partial, user_agent=user_agent, progress=progress)
    files[solution_name] = {"source": record["url"], "size": record["size"], "sha256": record["sha256"]}
    solution = read_solution(out / solution_name)
    log(f"fetch_csv: solution: {solution.rows:,} test images, {len(solution.non_landmark):,} without a landmark, "
        f"{len(solution.landmark):,} with one" + (f"; dropped {solution.invalid:,} rows with an invalid id" if solution.invalid else ""))

    kept: set[str] = set()
    total = ShardStats()
    for shard, url in enumerate(source.shard_urls):
        name = f"test_images_{shard:03d}.tar"
        dest = partial / name
        log(f"fetch_csv: shard {shard + 1}/{len(source.shard_urls)}: {url}")
        record, tar_path, owned = _fetch("gldv2.test_shard_url", url, fetch_shard, url, dest, partial,
                                        user_agent=user_agent, progress=progress)
        try:
            stats = extract_shard(tar_path, solution, images_dir, kept)
        except (tarfile.TarError, EOFError) as e:
            if owned:
                tar_path.unlink(missing_ok=True)  # the next run downloads it again
            raise DistractorError(f"{url} is not a readable tar archive ({e})"
                                  + ("; deleted the download, rerun to fetch it again" if owned else "")) from None
        if owned:
            tar_path.unlink()  # big, and everything needed from it is in images_dir now
        files[f"test/images_{shard:03d}.tar"] = {"source": record["url"], "size": record["size"], "sha256": record["sha256"]}
        log(f"fetch_csv: {name}: {stats.summary()}")
        total.members += stats.members
        total.kept += stats.kept
        total.skipped.update(stats.skipped)
    log(f"fetch_csv: distractors: {total.kept:,} of {len(solution.non_landmark):,} non-landmark test images "
        f"from {len(source.shard_urls)} of {NUM_TEST_SHARDS} shards ({total.summary()})")

    ids = sorted(kept)
    rows = pd.DataFrame({"id": ids, "url": [(images_dir / f"{i}.jpg").absolute().as_uri() for i in ids]})
    return rows[list(DISTRACTOR_COLUMNS)], files


def _fetch(key: str, url: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), with a FetchError turned into a one-line DistractorError naming the param."""
    try:
        return fn(*args, **kwargs)
    except FetchError as e:
        raise DistractorError(f"could not fetch {key}={url}: {e}") from None
