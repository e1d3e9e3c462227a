"""How each model input (a *stream*) maps between the engine's canonical tensors and what the model takes.

The engine optimises every stream as a canonical tensor (N, C, T, H, W) in *unit space*: ``u = x / B`` where x is
the value the model sees and B the stream's natural half-range. For RGB, x = (pixel - mean) / std with pixels in
[0, 1], so B = 0.5 / std per channel (half the pixel range). For flow, x = displacement / scale and the manifest's
``scale`` is the displacement that maps to 1, so B = 1. ``NCHW`` inputs are folded: one RGB frame is T = 1, and a
stack of L flow frames with 2L channels (x0, y0, x1, y1, ...) is (2, L).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from workers.engine.manifest import InputSpec


def canonical_shape(spec: InputSpec) -> tuple[int, int, int, int]:
    """(C, T, H, W) of a stream in the engine."""
    return (spec.base_channels, spec.num_frames, spec.height, spec.width)


def shortest_side(specs: Sequence[InputSpec]) -> int:
    """The shortest frame side, in pixels, over all streams (what the large-frame defaults are decided on)."""
    return min(min(spec.height, spec.width) for spec in specs)


def natural_half_range(spec: InputSpec) -> torch.Tensor:
    """B per channel, shape (C,): 0.5 / std for RGB (0.5 when std is absent), 1 for flow."""
    if spec.modality == "rgb":
        std = torch.tensor(spec.std if spec.std is not None else [1.0, 1.0, 1.0])
        return 0.5 / std
    return torch.ones(2)


@functools.lru_cache(maxsize=64)
def _on_device(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, C, 1, 1, 1) ``values`` on ``device``, copied there once per device: the engine converts at every step,
    and a copy from the host to a GPU waits for every kernel queued before it. Never written to."""
    return torch.tensor(values, dtype=torch.float32).to(device=device, dtype=dtype).view(1, -1, 1, 1, 1)


def _half_range(spec: InputSpec, like: torch.Tensor) -> torch.Tensor:
    return _on_device(tuple(natural_half_range(spec).tolist()), like.device, like.dtype)


def unit_to_model_space(u: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """u (N,C,T,H,W) in unit space -> x in model space, same shape."""
    return u * _half_range(spec, u)


def model_to_unit_space(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    return x / _half_range(spec, x)


def to_model_layout(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Canonical (N,C,T,H,W) -> the layout of the manifest: unchanged for NCTHW; (N, C*T, H, W) for NCHW with frames
    interleaved frame-major ([x0, y0, x1, y1, ...] for flow, [r0, g0, b0, r1, ...] for RGB stacks)."""
    if spec.layout == "NCTHW":
        return x
    n, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(n, t * c, h, w)


def from_model_layout(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Inverse of ``to_model_layout``."""
    if spec.layout == "NCTHW":
        return x
    n, _, h, w = x.shape
    c, t = spec.base_channels, spec.num_frames
    return x.reshape(n, t, c, h, w).permute(0, 2, 1, 3, 4)


def neutral_input(spec: InputSpec, batch: int, *, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 'no evidence' value of a stream in model space, canonical layout: the mean colour (zero after
    normalisation) for RGB and zero displacement for flow."""
    return torch.zeros((batch, *canonical_shape(spec)), device=device, dtype=dtype)
