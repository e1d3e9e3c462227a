"""Writing bundles: ``write_bundle`` (a module + manifest -> a .zip in one of the three formats, verified by
loading it back) and ``export_from_spec`` (the same from the user's own ``package.module:function``), which
``quirkscope export`` calls."""
from __future__ import annotations

import importlib
import json
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from workers.engine.bundle import checks, onnx_format, pt2_format, safetensors_format
from workers.engine.bundle.archive import MODEL_FILES
from workers.engine.bundle.loader import load_bundle
from workers.engine.errors import InvalidInput, ModelLoadError
from workers.engine.files import atomic_write
from workers.engine.manifest import MODEL_FORMATS, Manifest, parse_manifest

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_SPEC = re.compile(rf"({_DOTTED}):({_DOTTED})")
VERIFY_TOLERANCE = 1e-4


def _bundle_path(out: Path, manifest: Manifest) -> Path:
    """``out`` itself when it names a .zip; otherwise ``out/<name>-<version>.zip``."""
    if out.is_dir() or out.suffix.lower() != ".zip":
        safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{manifest.name}-{manifest.version}")
        return out / f"{safe}.zip"
    return out


def _write_zip(path: Path, manifest: Manifest, model_file: str, model_bytes: bytes) -> None:
    """Written atomically, so a reader never sees half a bundle."""
    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w") as zf:
            zf.writestr("manifest.json", json.dumps(manifest.model_dump(mode="json"), indent=2),
                        compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr(model_file, model_bytes, compress_type=zipfile.ZIP_STORED)

    atomic_write(path, write)


def _verify(module: nn.Module, path: Path, manifest: Manifest) -> None:
    """Load the written bundle back and compare its logits with the original module's on seeded noise."""
    loaded = load_bundle(path, trusted_pt2=False)
    inputs = checks.example_inputs(manifest, 2, random=True, seed=1)
    with torch.no_grad():
        expected = checks.run_forward(module, inputs, manifest)
        got = checks.run_forward(loaded.module, inputs, manifest)
    error = (expected - got).abs().max().item()
    if not error <= VERIFY_TOLERANCE * max(1.0, expected.abs().max().item()):
        path.unlink(missing_ok=True)
        raise ModelLoadError(
            f"the {manifest.format} bundle does not reproduce the model: logits differ by up to {error:.3g}",
            field=MODEL_FILES[manifest.format],
        )


def write_bundle(module: nn.Module, manifest: Manifest, out: Path, *, fmt: str = "onnx", verify: bool = True) -> Path:
    """Write ``module`` as a .zip bundle (manifest.json + the model file of ``fmt``) and return its path.

    ``out`` is the .zip path, or a directory that receives ``<name>-<version>.zip``. ``fmt`` is ``onnx``
    (batch axis dynamic on every input and output), ``safetensors`` (the manifest must name the architecture)
    or ``torch.export``. With ``verify`` the bundle is loaded back through ``load_bundle`` and must match the
    module's logits within 1e-4.
    """
    if fmt not in MODEL_FORMATS:
        raise InvalidInput(f"unknown bundle format '{fmt}'; use one of {', '.join(MODEL_FORMATS)}", field="format")
    manifest = parse_manifest(manifest.model_dump(mode="json") | {"format": fmt})
    was_training = module.training
    module.eval()
    try:
        if fmt == "onnx":
            data = onnx_format.export_onnx(module, manifest)
        elif fmt == "safetensors":
            data = safetensors_format.export_safetensors(module, manifest)
        else:
            data = pt2_format.export_pt2(module, manifest)
        path = _bundle_path(Path(out), manifest)
        _write_zip(path, manifest, MODEL_FILES[fmt], data)
        if verify:
            _verify(module, path, manifest)
    finally:
        module.train(was_training)
    return path


def _import_spec(spec: str) -> object:
    match = _SPEC.fullmatch(spec.strip())
    if not match:
        raise InvalidInput(f"'{spec}' is not of the form package.module:function", field="spec")
    module_name, attr_path = match.groups()
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidInput(f"could not import {module_name}: {type(exc).__name__}: {exc}", field="spec") from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise InvalidInput(f"{module_name} has no attribute '{attr_path}'", field="spec") from None
    return target


def export_from_spec(spec: str, manifest: Manifest, out: Path, fmt: str = "onnx") -> Path:
    """Import the user's own ``package.module:function``, call it (no arguments) for an ``nn.Module`` and write
    it with ``write_bundle``."""
    factory = _import_spec(spec)
    if not callable(factory):
        raise InvalidInput(f"{spec} is not callable", field="spec")
    module = factory()
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"{spec} returned {type(module).__name__}, not a torch.nn.Module", field="spec")
    return write_bundle(module, manifest, out, fmt=fmt)
