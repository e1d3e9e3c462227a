"""Architectures a ``safetensors`` bundle can name (DESIGN 3.1): the registry and its built-in entries
(torchvision video models, the project's two-stream nets); operators add more through the entry-point group
``quirkscope.architectures``."""
from __future__ import annotations

from workers.engine.architectures import torchvision_video, twostream  # noqa: F401  (register built-ins)
from workers.engine.architectures.registry import (
    ENTRY_POINT_GROUP,
    ArchitectureFactory,
    build_architecture,
    list_architectures,
    register_architecture,
)
from workers.engine.architectures.twostream import TwoStreamVGG16

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArchitectureFactory",
    "TwoStreamVGG16",
    "build_architecture",
    "list_architectures",
    "register_architecture",
]
