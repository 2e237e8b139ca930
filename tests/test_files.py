"""Atomic writes and publishing: a file appears whole under its final name or not at all."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys

import pytest

from landmarks import files
from landmarks.files import atomic_write_bytes, publish, sha256_file


def test_atomic_write_gives_the_file_the_umask_mode_not_owner_only(tmp_path) -> None:
    # The mode is derived from the umask at import, so check it in a process started with umask 022.
    target = tmp_path / "a" / "f.bin"
    code = f"from landmarks.files import atomic_write_bytes; atomic_write_bytes({str(target)!r}, b'x')"
    subprocess.run([sys.executable, "-c", code], check=True, preexec_fn=lambda: os.umask(0o022))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_atomic_write_replaces_the_whole_file(tmp_path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old contents")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_publish_renames_within_a_file_system(tmp_path) -> None:
    part = tmp_path / "partial" / "t.csv.part"
    part.parent.mkdir()
    part.write_bytes(b"data")
    publish(part, tmp_path / "out" / "t.csv")
    assert (tmp_path / "out" / "t.csv").read_bytes() == b"data" and not part.exists()


def test_publish_copies_across_file_systems_without_a_partial_file(tmp_path, monkeypatch) -> None:
    part = tmp_path / "t.csv.part"
    part.write_bytes(b"x" * 3_000_000)
    dest = tmp_path / "out" / "t.csv"
    real_replace = os.replace

    def replace(src, dst):  # the part is on another mount: only renames inside out/ work
        if os.path.dirname(src) != os.path.dirname(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    publish(part, dest)
    assert dest.read_bytes() == b"x" * 3_000_000 and not part.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["t.csv"]  # the temp copy was renamed, not left


def test_sha256_file_reads_in_chunks(tmp_path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()
