"""The architecture registry: names (``"torchvision.r3d_18"``) mapped to factories that build an untrained
``nn.Module`` for a given number of classes, plus the plugins an operator installs under the entry-point group
``quirkscope.architectures``."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType

from torch import nn

from workers.engine.errors import ModelLoadError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "quirkscope.architectures"

ArchitectureFactory = Callable[..., nn.Module]
"""``factory(num_classes: int, **kwargs) -> nn.Module``; must never download weights."""

_REGISTRY: dict[str, ArchitectureFactory] = {}
_PLUGIN_FAILURES: dict[str, str] = {}
_plugins_loaded = False
_plugin_lock = threading.Lock()


def register_architecture(name: str) -> Callable[[ArchitectureFactory], ArchitectureFactory]:
    """Decorator: register ``factory(num_classes, **kwargs) -> nn.Module`` under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"an architecture name must be a non-empty string, got {name!r}")

    def decorate(factory: ArchitectureFactory) -> ArchitectureFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _load_plugins() -> None:
    """Import every ``quirkscope.architectures`` entry point once. An entry point either names a factory
    (registered under the entry point's name) or a module that registers its architectures on import."""
    global _plugins_loaded
    with _plugin_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
            except Exception as exc:  # an operator's broken plugin must not hide the others
                _PLUGIN_FAILURES[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("architecture plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            if isinstance(loaded, ModuleType):
                continue
            if not callable(loaded):
                _PLUGIN_FAILURES[ep.name] = f"{ep.value} is not callable"
                log.warning("architecture plugin %s (%s) is not callable; skipped", ep.name, ep.value)
                continue
            if ep.name in _REGISTRY:
                log.warning("architecture plugin %s (%s) ignored: the name is already registered", ep.name, ep.value)
                continue
            _REGISTRY[ep.name] = loaded


def list_architectures() -> list[str]:
    """Names of every registered architecture (built-in and plugins), sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def build_architecture(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build the untrained architecture ``name`` with ``num_classes`` outputs.

    Raises ``ModelLoadError`` for an unknown name, kwargs the factory does not accept, or a factory that does
    not return an ``nn.Module``.
    """
    _load_plugins()
    factory = _REGISTRY.get(name)
    if factory is None:
        if name in _PLUGIN_FAILURES:
            raise ModelLoadError(
                f"architecture '{name}' comes from a plugin that failed to load ({_PLUGIN_FAILURES[name]})",
                field="manifest.architecture",
            )
        raise ModelLoadError(
            f"unknown architecture '{name}'; known architectures: {', '.join(sorted(_REGISTRY))}",
            field="manifest.architecture",
        )
    try:
        module = factory(num_classes=num_classes, **kwargs)
    except ModelLoadError:
        raise
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"architecture '{name}' could not be built with architecture_kwargs {kwargs}: {exc}",
            field="manifest.architecture_kwargs",
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"architecture '{name}' returned {type(module).__name__}, not a torch.nn.Module",
            field="manifest.architecture",
        )
    return module
