"""Intake of an uploaded bundle in the web process, without torch: stream it to a temporary file while
hashing it (never the whole upload in memory), then run the worker's own archive checks on it
(``workers.engine.bundle.archive``: member paths, sizes, pickles, the manifest and its model file). Building the
model is left to the worker's ``load_bundle``. Spool files that a killed process left behind are swept by age
(``sweep_spool``): at API start, and by uploads now and then (``sweep_spool_now_and_then``), since a gunicorn worker
killed mid-upload is replaced without the app starting again."""
from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.engine.bundle.archive import DEFAULT_MAX_UNCOMPRESSED_BYTES, open_zip_file, read_manifest
from workers.engine.errors import BundleError
from workers.engine.manifest import Manifest

SPOOL_PREFIX, SPOOL_SUFFIX = "upload-", ".zip"


@dataclass(frozen=True)
class SpooledBundle:
    path: Path
    sha256: str
    size: int
    manifest: Manifest


def spool(stream: BinaryIO, directory: Path, limit: int) -> tuple[Path, str, int]:
    """Copy ``stream`` to a temporary file in ``directory`` in 1 MiB pieces, hashing as it goes."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fh = tempfile.NamedTemporaryFile(dir=directory, prefix=SPOOL_PREFIX, suffix=SPOOL_SUFFIX, delete=False)
    try:
        with fh:
            while chunk := stream.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise BundleError(f"the bundle exceeds the upload limit of {limit} bytes", field="bundle")
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        Path(fh.name).unlink(missing_ok=True)
        raise
    return Path(fh.name), digest.hexdigest(), size


def inspect_bundle(path: Path, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES) -> Manifest:
    """Validate the zip's layout and manifest, exactly as the worker will before loading it."""
    manifest, _ = read_manifest(open_zip_file(path, "the bundle", max_uncompressed_bytes))
    return manifest


def intake(stream: BinaryIO, directory: Path, limit: int) -> SpooledBundle:
    path, sha, size = spool(stream, directory, limit)
    try:
        manifest = inspect_bundle(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return SpooledBundle(path, sha, size, manifest)


def discard(bundle: SpooledBundle) -> None:
    bundle.path.unlink(missing_ok=True)


def sweep_spool(directory: Path, older_than_s: float, now: float | None = None) -> list[Path]:
    """Delete the spool files in ``directory`` last written more than ``older_than_s`` seconds before ``now``
    (those of processes killed mid-upload: a live request keeps writing its own); return the ones deleted.
    Other files, and files another process deletes first, are left alone."""
    cutoff = (time.time() if now is None else now) - older_than_s
    deleted = []
    for path in directory.glob(f"{SPOOL_PREFIX}*{SPOOL_SUFFIX}"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted.append(path)
        except FileNotFoundError:
            continue
    return deleted


_last_sweep: dict[Path, float] = {}
SWEEPS_PER_MAX_AGE = 10


def sweep_spool_now_and_then(directory: Path, older_than_s: float, now: float | None = None) -> list[Path]:
    """``sweep_spool``, at most once per ``older_than_s / SWEEPS_PER_MAX_AGE`` seconds per process and directory
    (each upload calls it, so a file left behind lives at most 1.1 x the bound while uploads go on). Nothing
    with a bound <= 0."""
    now = time.time() if now is None else now
    if older_than_s <= 0 or now - _last_sweep.get(directory, float("-inf")) < older_than_s / SWEEPS_PER_MAX_AGE:
        return []
    _last_sweep[directory] = now
    return sweep_spool(directory, older_than_s, now)
