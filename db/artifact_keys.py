"""Artifact keys: relative POSIX paths such as ``audits/12/tensors/x.npy``, the same for every store."""
from __future__ import annotations

from pathlib import PurePosixPath

from workers.engine.errors import InvalidInput


def validate_key(key: str) -> str:
    """Keys are relative POSIX paths without ``..``, absolute parts or empty segments."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(p in ("..", ".", "") for p in key.split("/")) or "\\" in key:
        raise InvalidInput(f"invalid artifact key {key!r}", field="key")
    return key
