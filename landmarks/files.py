"""Files that appear whole or not at all.

Everything the project writes for others to read (stored images, checkpoints, reports, fetched
metadata) comes into place here, so a crash, even SIGKILL, leaves the old file or the new one,
never a partial one under the final name:
- `atomic_write_bytes`: bytes in memory -> a temp file beside the target, then a rename;
- `publish`: a finished temp or `.part` file -> its final name: a rename, or across file systems
  a copy to a temp file beside the target and then a rename;
- `sha256_file`: the hash that manifests record.
Temp files are named `.<name>.XXXXXXXX.tmp` in the target's folder, so cleaners can recognise them.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

COPY_BUFFER = 2**20
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _open_temp_beside(path: Path) -> tuple[int, str]:
    """A new, empty temp file `.<name>.XXXXXXXX.tmp` in `path`'s folder (made if missing), open for
    writing. Created with mode 0o666, which the umask turns into the usual mode of new files
    (mkstemp's is owner-only and would need a chmod: a syscall per stored image)."""
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:  # another writer drew the same name
            continue
        except FileNotFoundError:  # the folder does not exist yet: checked only then, not per file
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(f"no free temp file name beside {path}")


def _write_beside(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create `path` from what `write(f)` writes into a temp file in the same folder, then a rename."""
    fd, tmp = _open_temp_beside(path)
    try:
        with open(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename."""
    _write_beside(Path(path), lambda f: f.write(data))


def publish(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the complete file `src` to `dest` atomically, also when they are on different file
    systems (a `.part` in a partial folder on another mount): then via a temp copy beside `dest`."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError:  # EXDEV: a rename cannot cross file systems
        with open(src, "rb") as source:
            _write_beside(dest, lambda f: shutil.copyfileobj(source, f, COPY_BUFFER))
        src.unlink()


def sha256_file(path: str | os.PathLike, chunk: int = 4 * 2**20) -> str:
    """Hex sha256 of a file, read in chunks (big metadata files and checkpoints alike)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
