"""Model bundles (DESIGN 3.1): safe intake of what users upload (ONNX, safetensors + a registered
architecture, or a vetted torch.export archive) and the writing of bundles in those formats."""
from __future__ import annotations

from workers.engine.bundle.archive import DEFAULT_MAX_UNCOMPRESSED_BYTES
from workers.engine.bundle.export import export_from_spec, write_bundle
from workers.engine.bundle.loader import MODEL_FILES, LoadedModel, load_bundle

__all__ = [
    "DEFAULT_MAX_UNCOMPRESSED_BYTES",
    "MODEL_FILES",
    "LoadedModel",
    "export_from_spec",
    "load_bundle",
    "write_bundle",
]
