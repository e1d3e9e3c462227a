"""Atomic file writes, the one way every layer writes a file that another process may read: a temp file in
the target's folder, fsync, ``os.replace``. torch-free, so the database layer's artifact store and the web
process use it too."""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

FILE_MODE = 0o644  # artifacts and reports are read by the web process, maybe as another user
STALE_PART_S = 15 * 60


def remove_stale_parts(path: Path, older_than_s: float = STALE_PART_S) -> int:
    """Delete the temp files earlier, killed writes of ``path`` left behind; returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder to write; on success it replaces ``path`` (``os.replace``).

    A process killed mid-write leaves at most a hidden ``.{name}.*.part`` file, never a half ``path``;
    on an exception the temp file is removed, and the next write of ``path`` removes such leftovers once they
    are older than ``STALE_PART_S`` (younger ones may belong to a writer still running). The result is made
    ``0o644`` (temp files are private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically through ``write(file)`` (see ``atomic_path``); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)




def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``); returns ``path``."""
    return atomic_write(path, lambda handle: handle.write(data))
