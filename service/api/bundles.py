"""Intake of an uploaded bundle in the web process, without torch: stream it to a temporary file while
hashing it (never the whole upload in memory), read and validate its ``manifest.json``, and refuse
formats that would execute code. The full check (building the model) is the worker's ``load_bundle``."""
from __future__ import annotations

import hashlib
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.engine.errors import BundleError, UnsafeBundle
from workers.engine.manifest import Manifest, parse_manifest

MODEL_MEMBER = {"onnx": "model.onnx", "safetensors": "weights.safetensors", "torch.export": "model.pt2"}
REFUSED_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".jit", ".torchscript")
MAX_MANIFEST_BYTES = 1024 * 1024
HOW_TO_EXPORT = ("export the model to ONNX (`quirkscope export`, or torch.onnx.export with a dynamic batch "
                 "axis) or save its weights as safetensors with a registered architecture")


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
    fh = tempfile.NamedTemporaryFile(dir=directory, prefix="upload-", suffix=".zip", delete=False)
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


def inspect_bundle(path: Path) -> Manifest:
    """Validate the zip's layout and manifest; refuse pickles, TorchScript and unsafe member names."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise BundleError("the bundle is not a .zip file", field="bundle") from exc
    with zf:
        names = zf.namelist()
        for name in names:
            if name.startswith("/") or ".." in name.split("/"):
                raise UnsafeBundle(f"bundle member {name!r} has an unsafe path", field="bundle")
            if name.lower().endswith(REFUSED_SUFFIXES):
                raise UnsafeBundle(f"bundle member {name!r} is a pickle/TorchScript checkpoint, which would run "
                                   f"code when loaded; {HOW_TO_EXPORT}", field="bundle")
        if "manifest.json" not in names:
            raise BundleError("the bundle has no manifest.json at its top level", field="bundle.manifest")
        info = zf.getinfo("manifest.json")
        if info.file_size > MAX_MANIFEST_BYTES:
            raise BundleError("manifest.json is too large", field="bundle.manifest")
        manifest = parse_manifest(zf.read("manifest.json"))
        member = MODEL_MEMBER[manifest.format]
        if member not in names:
            raise BundleError(f"format {manifest.format!r} needs a {member} in the bundle", field="bundle")
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



