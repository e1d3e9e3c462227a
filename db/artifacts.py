"""The artifact store: where bundles, clips, strips, tensors and reports live, addressed by a relative key
such as ``models/<sha256>.zip`` or ``audits/12/vis/ApplyEyeMakeup/appearance/k0_s0.gif``. One interface,
a filesystem implementation whose writes are atomic (temp file + rename), so a re-run task overwrites
an artifact whole or not at all; the S3 implementation (same guarantee) is in ``db.artifacts_s3``."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol
from urllib.parse import urlparse

from db.artifact_keys import validate_key
from workers.engine.errors import InvalidInput
from workers.engine.files import atomic_write, write_bytes_atomic


class ArtifactStore(Protocol):
    """What the service and the workers need from artifact storage."""

    def put_bytes(self, key: str, data: bytes) -> str: ...

    def put_file(self, key: str, path: str | Path) -> str: ...

    def open(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def check(self) -> None: ...


class FilesystemArtifactStore:
    """Artifacts under one root directory (a local disk or a shared volume)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        write_bytes_atomic(self._path(key), data)
        return key

    def put_file(self, key: str, path: str | Path) -> str:
        with open(path, "rb") as source:
            atomic_write(self._path(key), lambda handle: shutil.copyfileobj(source, handle))
        return key

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def delete_prefix(self, prefix: str) -> int:
        target = self._path(prefix.rstrip("/"))
        if target.is_dir():
            count = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target)
            return count
        if target.is_file():
            target.unlink()
            return 1
        return 0

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if base.is_file():
            yield prefix
            return
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith(".tmp"):
                yield p.relative_to(self.root).as_posix()

    def check(self) -> None:
        """Readiness probe: write, read back and delete a small file."""
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
            if Path(fh.name).read_bytes() != b"ok":
                raise OSError("artifact store read-back mismatch")


def store_from_url(url: str, *, endpoint_url: str = "", region: str = "",
                   multipart_bytes: int = 8 * 1024 * 1024) -> ArtifactStore:
    """``file:///abs/dir`` or a plain path -> a filesystem store; ``s3://bucket/prefix`` -> an S3 store
    (``endpoint_url`` for an S3-compatible server; ``multipart_bytes``: part size of large uploads)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return FilesystemArtifactStore(parsed.path if parsed.scheme else url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput(f"an S3 artifact URL names a bucket: s3://bucket/prefix, got {url!r}",
                               field="QUIRKSCOPE_ARTIFACTS_URL")
        from db.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(url, endpoint_url=endpoint_url, region=region, multipart_bytes=multipart_bytes)
    raise InvalidInput(f"unsupported artifact store URL scheme {parsed.scheme!r} (use file:// or s3://)",
                       field="QUIRKSCOPE_ARTIFACTS_URL")
