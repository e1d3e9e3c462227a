"""The ``safetensors`` bundle format: ``weights.safetensors`` loaded strictly into an architecture built from
the registry (``manifest.architecture`` + ``architecture_kwargs``)."""
from __future__ import annotations

import json
import struct

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from workers.engine.architectures import build_architecture
from workers.engine.bundle.archive import MODEL_FILES, pickle_kind
from workers.engine.errors import BundleError, ModelLoadError, UnsafeBundle
from workers.engine.manifest import Manifest

MODEL_FILE = MODEL_FILES["safetensors"]
_SHOWN = 5


def _check_header(data: bytes) -> None:
    kind = pickle_kind(data)
    if kind:
        raise UnsafeBundle(
            f"{MODEL_FILE} is {kind}, not a safetensors file; "
            "save with safetensors.torch.save_file(model.state_dict(), ...)",
            field=MODEL_FILE,
        )
    if len(data) < 10 or data[8:9] != b"{" or struct.unpack("<Q", data[:8])[0] > len(data) - 8:
        raise BundleError(f"{MODEL_FILE} is not a safetensors file", field=MODEL_FILE)


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")


def _mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} is {list(state[k].shape)} in the file but {list(expected[k].shape)} in the model"
        for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if shapes:
        parts.append("; ".join(shapes[:_SHOWN]) + ("; ..." if len(shapes) > _SHOWN else ""))
    return "; ".join(parts) or None


def load_safetensors_model(data: bytes, manifest: Manifest) -> nn.Module:
    """Build ``manifest.architecture`` for ``len(manifest.classes)`` classes and load the weights strictly."""
    _check_header(data)
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise BundleError(f"{MODEL_FILE} is not a readable safetensors file: {exc}", field=MODEL_FILE) from exc
    assert manifest.architecture is not None  # the manifest schema requires it for this format
    module = build_architecture(manifest.architecture, len(manifest.classes), **manifest.architecture_kwargs)
    problem = _mismatch(state, module.state_dict())
    if problem:
        raise ModelLoadError(
            f"{MODEL_FILE} does not match architecture '{manifest.architecture}' with "
            f"{len(manifest.classes)} classes: {problem}",
            field=MODEL_FILE,
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{MODEL_FILE} does not load into '{manifest.architecture}': {exc}", field=MODEL_FILE
        ) from exc
    return module


def export_safetensors(module: nn.Module, manifest: Manifest) -> bytes:
    """``weights.safetensors`` bytes of ``module``'s state dict, after checking that it is the state dict the
    registry builds for ``manifest.architecture``."""
    assert manifest.architecture is not None
    expected = build_architecture(manifest.architecture, len(manifest.classes), **manifest.architecture_kwargs)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    problem = _mismatch(state, expected.state_dict())
    if problem:
        raise ModelLoadError(
            f"the model is not architecture '{manifest.architecture}' with {len(manifest.classes)} classes: {problem}",
            field="manifest.architecture",
        )
    return save_safetensors(state, metadata={"architecture": manifest.architecture})
