"""Opening what a user uploads (a .zip path, its bytes, or a directory) without trusting it: member paths,
duplicate names and the total unpacked size are checked before anything is read, and pickles, PyTorch
checkpoints and TorchScript archives are refused by name and by content; then its manifest and model file.

Torch-free, so that the web process checks uploads with the same code as the worker (``load_bundle``)."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from workers.engine.errors import BundleError, UnsafeBundle
from workers.engine.manifest import Manifest, parse_manifest

DEFAULT_MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_MANIFEST_BYTES = 1024 * 1024
MODEL_FILES = {"onnx": "model.onnx", "safetensors": "weights.safetensors", "torch.export": "model.pt2"}
FORMAT_KINDS = {"onnx": "an ONNX protobuf", "safetensors": "a safetensors file",
                "torch.export": "a torch.export archive"}
EXPORT_HINT = "export the model to ONNX (`quirkscope export`) or to safetensors with a registered architecture"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".jit", ".torchscript")
_IGNORED_PREFIXES = ("__MACOSX/",)
_IGNORED_NAMES = (".DS_Store",)


def looks_like_pickle(data: bytes) -> bool:
    """A binary pickle starts with PROTO (0x80) and a protocol number 2..5."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def looks_like_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def pickle_container_kind(names: Iterable[str]) -> tuple[str, str] | None:
    """``("TorchScript archive", member)`` or ``("pickled PyTorch checkpoint", member)`` when the zip listing is
    one torch.jit.save / torch.save wrote; None otherwise."""
    names = list(names)
    for name in names:
        parts = PurePosixPath(name).parts
        if "code" in parts[:-1] or parts[-1] == "constants.pkl":
            return "TorchScript archive", name
    for name in names:
        if PurePosixPath(name).name == "data.pkl":
            return "pickled PyTorch checkpoint", name
    return None


def pickle_kind(data: bytes) -> str | None:
    """What a model file that should be a protobuf or safetensors really is, when it is a pickle or a zip:
    ``"a Python pickle"``, ``"a TorchScript archive"``, ``"a pickled PyTorch checkpoint"``, ``"a zip archive"``."""
    if looks_like_pickle(data):
        return "a Python pickle"
    if not looks_like_zip(data):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            kind = pickle_container_kind(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        kind = None
    return f"a {kind[0]}" if kind else "a zip archive"


def _unsafe_member_reason(name: str) -> str | None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if "\\" in name:
        return "a backslash in its path"
    if ".." in name.split("/"):
        return "a '..' path component"
    if "\x00" in name:
        return "a NUL byte in its name"
    return None


def _check_listing(names: list[str], sizes: list[int], limit: int, label: str) -> None:
    """Member paths, duplicates and total size first (nothing has been read yet), then pickles by name."""
    for name in names:
        reason = _unsafe_member_reason(name)
        if reason:
            raise UnsafeBundle(f"{label} member '{name}' has {reason}; refused", field="bundle")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UnsafeBundle(f"{label} lists member '{name}' twice; refused", field="bundle")
        seen.add(name)
    total = sum(sizes)
    if total > limit:
        raise BundleError(
            f"{label} unpacks to {total} bytes, over the limit of {limit} bytes", field="bundle"
        )
    if "manifest.json" not in {PurePosixPath(n).name for n in names} and any(
        PurePosixPath(n).name == "archive_format" for n in names
    ):
        raise BundleError(
            f"{label} has no manifest.json (this looks like a bare model.pt2: put it in a .zip next to a "
            "manifest.json with format 'torch.export')",
            field="manifest",
        )
    kind = pickle_container_kind(names)
    if kind:
        raise UnsafeBundle(
            f"{label} is or contains a {kind[0]} ('{kind[1]}'), which runs code when loaded; {EXPORT_HINT}",
            field="bundle",
        )
    for name in names:
        if name.lower().endswith(PICKLE_SUFFIXES):
            raise UnsafeBundle(
                f"{label} member '{name}' is a pickle-based checkpoint, which runs code when loaded; {EXPORT_HINT}",
                field="bundle",
            )


def _bundle_root(names: list[str]) -> str:
    """'' when manifest.json is at the top; ``'dir/'`` when every member sits in one folder holding it."""
    if "manifest.json" in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        root = f"{tops.pop()}/"
        if f"{root}manifest.json" in names:
            return root
    return ""


@dataclass
class BundleArchive:
    """The members of one bundle, named relative to its root (``manifest.json``, ``model.onnx``, ...)."""

    label: str
    sha256: str
    sizes: dict[str, int]
    _read: dict[str, Callable[[], bytes]] = field(repr=False)
    _open: dict[str, Callable[[], BinaryIO]] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return sorted(self.sizes)

    def read(self, name: str) -> bytes:
        try:
            return self._read[name]()
        except KeyError:
            raise BundleError(f"{self.label} has no member '{name}'", field=name) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{self.label} member '{name}' is unreadable: {exc}", field=name) from exc

    def pickle_kind(self, name: str) -> str | None:
        """``pickle_kind`` of a member, streaming it (a nested zip's listing is read without holding it whole)."""
        opener = self._open.get(name)
        if opener is None:
            return pickle_kind(self.read(name))
        try:
            with opener() as fh:
                head = fh.read(4)
                if looks_like_pickle(head):
                    return "a Python pickle"
                if not looks_like_zip(head):
                    return None
                fh.seek(0)
                try:
                    with zipfile.ZipFile(fh) as inner:
                        kind = pickle_container_kind(inner.namelist())
                except (zipfile.BadZipFile, OSError, ValueError, EOFError):
                    kind = None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{self.label} member '{name}' is unreadable: {exc}", field=name) from exc
        return f"a {kind[0]}" if kind else "a zip archive"


def open_zip_bytes(data: bytes, label: str, max_uncompressed_bytes: int) -> BundleArchive:
    """Check and index a bundle zip held in memory."""
    return _open_zip(io.BytesIO(data), data[:4], hashlib.sha256(data).hexdigest(), label, max_uncompressed_bytes)


def open_zip_file(path: Path, label: str, max_uncompressed_bytes: int) -> BundleArchive:
    """Check and index a bundle zip on disk, reading members only when asked (an upload is never held whole)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    return _open_zip(path, head, sha, label, max_uncompressed_bytes)


def _open_zip(source: io.BytesIO | Path, head: bytes, sha256: str, label: str,
              max_uncompressed_bytes: int) -> BundleArchive:
    if not looks_like_zip(head) or not zipfile.is_zipfile(source):
        if looks_like_pickle(head):
            raise UnsafeBundle(
                f"{label} is a Python pickle, which runs code when loaded; {EXPORT_HINT}", field="bundle"
            )
        raise BundleError(
            f"{label} is not a zip archive; a bundle is a .zip holding manifest.json and one model file",
            field="bundle",
        )
    try:
        zf = zipfile.ZipFile(source)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise BundleError(f"{label} is not a readable zip archive: {exc}", field="bundle") from exc
    _check_listing([i.filename for i in infos], [i.file_size for i in infos], max_uncompressed_bytes, label)
    files = [
        i for i in infos
        if not i.is_dir() and not i.filename.startswith(_IGNORED_PREFIXES)
        and PurePosixPath(i.filename).name not in _IGNORED_NAMES
    ]
    for info in files:
        if info.flag_bits & 0x1:
            raise BundleError(f"{label} member '{info.filename}' is encrypted", field="bundle")
        if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeBundle(f"{label} member '{info.filename}' is a symlink; refused (store the file itself)",
                               field="bundle")
    root = _bundle_root([i.filename for i in files])
    sizes: dict[str, int] = {}
    readers: dict[str, Callable[[], bytes]] = {}
    openers: dict[str, Callable[[], BinaryIO]] = {}
    for info in files:
        if not info.filename.startswith(root):
            continue
        rel = info.filename[len(root):]
        sizes[rel] = info.file_size
        readers[rel] = (lambda info=info: zf.read(info))
        openers[rel] = (lambda info=info: zf.open(info))
    return BundleArchive(label, sha256, sizes, readers, openers)


def open_directory(path: Path, max_uncompressed_bytes: int) -> BundleArchive:
    """Check and index a bundle laid out as a directory (symlinks refused)."""
    label = f"bundle directory {path.name}"
    rels: list[str] = []
    sizes: list[int] = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(path).as_posix()
            if full.is_symlink():
                raise UnsafeBundle(f"{label} holds a symlink '{rel}'; copy the file instead", field="bundle")
            if name in filenames:
                rels.append(rel)
                sizes.append(full.stat().st_size)
    _check_listing(rels, sizes, max_uncompressed_bytes, label)
    digest = hashlib.sha256()
    for rel in sorted(rels):
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256((path / rel).read_bytes()).digest())
    readers = {rel: (lambda rel=rel: (path / rel).read_bytes()) for rel in rels}
    return BundleArchive(label, digest.hexdigest(), dict(zip(rels, sizes)), readers)


def open_bundle(
    source: str | Path | bytes, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> BundleArchive:
    """A bundle from zip bytes, a .zip path or a directory; pickles and checkpoints are refused up front."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return open_zip_bytes(bytes(source), "bundle", max_uncompressed_bytes)
    path = Path(source)
    if path.is_dir():
        return open_directory(path, max_uncompressed_bytes)
    if not path.is_file():
        raise BundleError(f"bundle {path} does not exist", field="bundle")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeBundle(
            f"{path.name} is a pickle-based PyTorch checkpoint (or TorchScript), which runs code when loaded; "
            f"{EXPORT_HINT}",
            field="bundle",
        )
    return open_zip_file(path, path.name, max_uncompressed_bytes)


def read_manifest(archive: BundleArchive) -> tuple[Manifest, str]:
    """The bundle's validated manifest and the name of the one model file its ``format`` needs (present, and
    the only model file in the bundle)."""
    if "manifest.json" not in archive.sizes:
        raise BundleError(f"{archive.label} has no manifest.json", field="manifest")
    if archive.sizes["manifest.json"] > MAX_MANIFEST_BYTES:
        raise BundleError(f"{archive.label} has a manifest.json over {MAX_MANIFEST_BYTES} bytes", field="manifest")
    manifest = parse_manifest(archive.read("manifest.json"))
    model_file = MODEL_FILES[manifest.format]
    present = sorted(set(MODEL_FILES.values()) & set(archive.sizes))
    if model_file not in archive.sizes:
        raise BundleError(
            f"{archive.label} has no {model_file}, which format '{manifest.format}' needs"
            + (f" (it holds {', '.join(present)})" if present else ""),
            field=model_file,
        )
    if present != [model_file]:
        raise BundleError(
            f"{archive.label} holds several model files ({', '.join(present)}); keep only the {model_file} "
            f"that format '{manifest.format}' names",
            field=model_file,
        )
    kind = archive.pickle_kind(model_file)
    # a .pt2 is itself a zip (its members are vetted by the pt2 guard); anything else pickled is refused here,
    # before any format's loader sees it, and in the web process too
    if kind and not (manifest.format == "torch.export" and kind == "a zip archive"):
        raise UnsafeBundle(f"{model_file} is {kind}, not {FORMAT_KINDS[manifest.format]}; {EXPORT_HINT}",
                           field=model_file)
    return manifest, model_file
