"""Checks every loaded model passes before it is handed out: it runs on inputs of the manifest's shapes,
returns ``(N, len(classes))`` logits, is frozen in eval mode, and passes gradients back to its inputs."""
from __future__ import annotations

import torch
from torch import nn

from workers.engine.errors import ModelLoadError
from workers.engine.manifest import Manifest


def example_inputs(manifest: Manifest, batch: int, *, random: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """One tensor per manifest input, in manifest order: ``(batch, *spec.shape)``, zeros or seeded normal noise."""
    if random:
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(batch, *spec.shape, generator=gen) for spec in manifest.inputs)
    return tuple(torch.zeros(batch, *spec.shape) for spec in manifest.inputs)


def describe_shapes(inputs: tuple[torch.Tensor, ...], manifest: Manifest) -> str:
    """``"appearance (2, 3, 8, 112, 112), motion (2, 2, 8, 112, 112)"``."""
    return ", ".join(f"{spec.name} {tuple(x.shape)}" for spec, x in zip(manifest.inputs, inputs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def run_forward(module: nn.Module, inputs: tuple[torch.Tensor, ...], manifest: Manifest) -> torch.Tensor:
    """``module(*inputs)``; any failure becomes a ``ModelLoadError`` that names the input shapes tried."""
    try:
        out = module(*inputs)
    except Exception as exc:
        raise ModelLoadError(
            f"the model does not run on inputs of the manifest's shapes ({describe_shapes(inputs, manifest)}): "
            f"{type(exc).__name__}: {_first_line(exc)}",
            field="manifest.inputs",
        ) from exc
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(
            f"the model returns {type(out).__name__}, not a logits tensor of shape (N, {len(manifest.classes)})",
            field="manifest.classes",
        )
    return out


def check_logits(out: torch.Tensor, batch: int, manifest: Manifest) -> None:
    """Raise ``ModelLoadError`` unless ``out`` has shape ``(batch, len(manifest.classes))``."""
    n_classes = len(manifest.classes)
    if out.ndim == 2 and out.shape[0] == batch and out.shape[1] != n_classes:
        raise ModelLoadError(
            f"manifest lists {n_classes} classes but the model returns {out.shape[1]} logits",
            field="manifest.classes",
        )
    if tuple(out.shape) != (batch, n_classes):
        raise ModelLoadError(
            f"the model returns a tensor of shape {tuple(out.shape)} for a batch of {batch}; "
            f"expected logits of shape ({batch}, {n_classes})",
            field="manifest.classes",
        )


def check_forward(module: nn.Module, manifest: Manifest, batch: int = 2) -> None:
    """Run a batch of zeros of the manifest's input shapes and check the logits' shape."""
    inputs = example_inputs(manifest, batch)
    with torch.no_grad():
        out = run_forward(module, inputs, manifest)
    check_logits(out, batch, manifest)


def check_input_gradients(module: nn.Module, manifest: Manifest, *, field: str, batch: int = 2) -> None:
    """One forward/backward on seeded noise: every input must receive a finite gradient, not all zero."""
    inputs = tuple(x.requires_grad_(True) for x in example_inputs(manifest, batch, random=True))
    with torch.enable_grad():
        out = run_forward(module, inputs, manifest)
        if not out.requires_grad:
            raise ModelLoadError("the model's logits do not depend differentiably on its inputs", field=field)
        out.sum().backward()
    for spec, x in zip(manifest.inputs, inputs):
        if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
            raise ModelLoadError(
                f"the model gives no usable gradient with respect to its input '{spec.name}'", field=field
            )


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, and no parameter requires a gradient (inputs are what the engine optimises)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
