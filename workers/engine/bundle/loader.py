"""``load_bundle``: from an uploaded bundle to a frozen, checked ``nn.Module`` (DESIGN 3.1)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from workers.engine.bundle import checks, onnx_format, pt2_format, safetensors_format
from workers.engine.bundle.archive import DEFAULT_MAX_UNCOMPRESSED_BYTES, open_bundle, read_manifest
from workers.engine.manifest import Manifest

log = logging.getLogger(__name__)



@dataclass
class LoadedModel:
    """A model ready for the engine: ``module`` is in eval mode with no parameter requiring a gradient;
    ``sha256`` is that of the bundle's bytes (for a directory: of its files' names and contents)."""

    module: nn.Module
    manifest: Manifest
    sha256: str


def load_bundle(
    source: str | Path | bytes,
    *,
    trusted_pt2: bool = False,
    check_forward: bool = True,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> LoadedModel:
    """Load a bundle (.zip path, zip bytes or directory) without executing code from it.

    Reads ``manifest.json``, then the one model file its ``format`` names. ``trusted_pt2=True`` skips the
    vetting of ``model.pt2`` (for projects an admin marked as trusted). ``check_forward`` runs a batch of two
    zero inputs of the manifest's shapes and checks the logits are ``(2, len(classes))``. Raises
    ``BundleError`` / ``UnsafeBundle`` / ``ModelLoadError`` with the offending ``field``.
    """
    archive = open_bundle(source, max_uncompressed_bytes)
    manifest, model_file = read_manifest(archive)
    data = archive.read(model_file)
    if manifest.format == "onnx":
        module = onnx_format.load_onnx(data, manifest)
    elif manifest.format == "safetensors":
        module = safetensors_format.load_safetensors_model(data, manifest)
    else:
        if trusted_pt2:
            log.warning("loading %s of %s without vetting: the project is marked trusted", model_file, archive.label)
        module = pt2_format.load_pt2(data, manifest, trusted=trusted_pt2, max_uncompressed_bytes=max_uncompressed_bytes)
    checks.freeze(module)
    if check_forward:
        checks.check_forward(module, manifest)
    if manifest.format == "torch.export":
        checks.check_input_gradients(module, manifest, field=model_file)
    log.info("loaded bundle %s: %s %s (%s, sha256 %s)", archive.label, manifest.name, manifest.version,
             manifest.format, archive.sha256)
    return LoadedModel(module=module, manifest=manifest, sha256=archive.sha256)
