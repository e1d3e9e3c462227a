"""Model bundles (DESIGN 3.1): safe intake of what users upload (ONNX, safetensors + a registered
architecture, or a vetted torch.export archive) and the writing of bundles in those formats.

The names below load on first use, so that ``workers.engine.bundle.archive`` (torch-free) can be imported by
the web process without pulling in torch."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "DEFAULT_MAX_UNCOMPRESSED_BYTES": "archive",
    "MODEL_FILES": "archive",
    "export_from_spec": "export",
    "write_bundle": "export",
    "LoadedModel": "loader",
    "load_bundle": "loader",
}

if TYPE_CHECKING:  # for type checkers only; ``__getattr__`` loads them (``__all__`` is computed, so: noqa)
    from workers.engine.bundle.archive import DEFAULT_MAX_UNCOMPRESSED_BYTES, MODEL_FILES  # noqa: F401
    from workers.engine.bundle.export import export_from_spec, write_bundle  # noqa: F401
    from workers.engine.bundle.loader import LoadedModel, load_bundle  # noqa: F401

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
