"""Objectives of activation maximisation: callables that score each row of a batch, composable with ``+``, ``-``
and scalar (or per-row tensor) ``*``, in the spirit of Lucid/Lucent's ``objectives`` but batched: one objective
object addresses a different unit in every row.

An objective is evaluated on an ``ObjectiveContext`` (the unit-space inputs of each stream, the logits and the
activations of the layers it declared) and returns a tensor of shape (N,) to be *maximised*. Layer activations are
captured by forward hooks that ``capture_activations`` registers only on the declared layers and always removes.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from workers.engine import regularizers
from workers.engine.errors import InvalidInput


@dataclass
class ObjectiveContext:
    """What an objective sees at one step."""

    inputs: dict[str, torch.Tensor]          # stream name -> unit-space canonical (N, C, T, H, W)
    logits: torch.Tensor                     # (N, K), pre-softmax
    activations: dict[str, torch.Tensor] = field(default_factory=dict)  # dotted layer name -> output


Weight = float | torch.Tensor


class Objective:
    """A per-row score (N,) to maximise. ``layers`` are the dotted module names it needs hooked."""

    def __init__(self, fn: Callable[[ObjectiveContext], torch.Tensor], name: str,
                 layers: frozenset[str] = frozenset()) -> None:
        self.fn = fn
        self.name = name
        self.layers = frozenset(layers)

    def __call__(self, ctx: ObjectiveContext) -> torch.Tensor:
        return self.fn(ctx)

    def __add__(self, other: "Objective | float") -> "Objective":
        if not isinstance(other, Objective):
            value = float(other)
            return Objective(lambda ctx: self(ctx) + value, f"{self.name} + {value:g}", self.layers)
        return Objective(lambda ctx: self(ctx) + other(ctx), f"{self.name} + {other.name}",
                         self.layers | other.layers)

    __radd__ = __add__

    def __neg__(self) -> "Objective":
        return Objective(lambda ctx: -self(ctx), f"-({self.name})", self.layers)

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-other if isinstance(other, Objective) else -float(other))

    def __rsub__(self, other: float) -> "Objective":
        return (-self) + other

    def __mul__(self, weight: Weight) -> "Objective":
        if isinstance(weight, Objective):
            raise TypeError("objectives can be scaled by numbers or per-row tensors, not multiplied together")
        label = f"{weight:g}" if isinstance(weight, (int, float)) else "w"
        return Objective(lambda ctx: _scaled(weight, self(ctx)), f"{label} * ({self.name})", self.layers)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _scaled(weight: Weight, value: torch.Tensor) -> torch.Tensor:
    if isinstance(weight, torch.Tensor):
        return weight.to(device=value.device, dtype=value.dtype) * value
    return weight * value


def class_logit(targets: torch.Tensor | list[int], contrast: float = 0.0,
                partners: Sequence[Sequence[int]] | None = None, partner_contrast: float = 0.0) -> Objective:
    """The pre-softmax logit of class ``targets[n]`` in row n, minus ``contrast`` times the log-sum-exp of the
    other logits. ``contrast = 0`` is the paper's objective (all evidence for the class, shared or not);
    ``contrast = 1`` is the log-odds of the class (only what sets it apart from the rest). With ``partners[n]``
    (the classes row n's class is compared with, e.g. those it is confused with), also minus ``partner_contrast``
    times the log-sum-exp of those classes' logits: what sets the class apart from *them*. A row without
    partners gets no such term."""
    idx = torch.as_tensor(targets, dtype=torch.long)
    rows = len(idx)
    mask = torch.zeros(rows, 0, dtype=torch.bool)
    if partners is not None and partner_contrast:
        if len(partners) != rows:
            raise ValueError(f"{len(partners)} partner lists for {rows} targets")
        width = max((max(p) + 1 for p in partners if len(p)), default=0)
        mask = torch.zeros(rows, width, dtype=torch.bool)
        for n, row in enumerate(partners):
            if idx[n].item() in row:
                raise ValueError(f"row {n}: class {idx[n].item()} is its own partner")
            mask[n, list(row)] = True
    on_devices: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    with_partners = bool(mask.any())

    def on_device(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The target column, the partner mask and its rows that hold a partner, moved to ``device`` once, not at
        every step (a copy from the host to a GPU can wait for the kernels queued before it)."""
        if device not in on_devices:
            on_devices[device] = (idx.to(device).view(-1, 1), mask.to(device), mask.any(dim=1).to(device))
        return on_devices[device]

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        logits = ctx.logits.float()
        col, partner_mask, has = on_device(logits.device)
        value = logits.gather(1, col).squeeze(1)
        if contrast:
            others = logits.scatter(1, col, float("-inf"))
            value = value - contrast * torch.logsumexp(others, dim=1)
        if with_partners:
            near = torch.logsumexp(logits[:, :mask.shape[1]].masked_fill(~partner_mask, float("-inf")), dim=1)
            value = value - partner_contrast * torch.where(has, near, torch.zeros_like(near))
        return value

    name = "class_logit" if not contrast else f"class_logit(contrast={contrast:g})"
    if with_partners:
        name += f" - {partner_contrast:g} lse(partners)"
    return Objective(fn, name)


def channel(layer: str, channels: torch.Tensor | list[int]) -> Objective:
    """Mean activation of channel ``channels[n]`` of layer ``layer`` (dotted ``named_modules`` path) in row n,
    averaged over every axis after the channel axis (any rank: (N,C), (N,C,H,W), (N,C,T,H,W))."""
    idx = torch.as_tensor(channels, dtype=torch.long)

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.activations[layer].float()
        picked = act.gather(1, idx.to(act.device).view(-1, *([1] * (act.dim() - 1))).expand(-1, 1, *act.shape[2:]))
        return picked.flatten(1).mean(dim=1)

    return Objective(fn, f"channel({layer})", frozenset({layer}))


def zero() -> Objective:
    """The objective that is 0 for every row and depends on nothing (an empty sum of penalties)."""
    return Objective(lambda ctx: ctx.logits.new_zeros(ctx.logits.shape[0], dtype=torch.float32), "0")


def lp_penalty(stream: str, alpha: float) -> Objective:
    return Objective(lambda ctx: regularizers.lp_norm(ctx.inputs[stream], alpha), f"L{alpha:g}({stream})")


def spatial_tv_penalty(stream: str, beta: float) -> Objective:
    return Objective(lambda ctx: regularizers.spatial_tv(ctx.inputs[stream], beta), f"TV{beta:g}({stream})")


def temporal_penalty(stream: str) -> Objective:
    return Objective(lambda ctx: regularizers.temporal_variation(ctx.inputs[stream]), f"TT({stream})")


def resolve_layers(model: nn.Module, names: frozenset[str] | set[str]) -> dict[str, nn.Module]:
    """Dotted names -> modules; an unknown name raises InvalidInput naming the closest existing ones."""
    modules = dict(model.named_modules())
    found = {}
    for name in sorted(names):
        if name not in modules:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInput(f"the model has no layer named {name!r}{hint}", field="layer")
        found[name] = modules[name]
    return found


@contextlib.contextmanager
def capture_activations(model: nn.Module, names: frozenset[str] | set[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Hook the named layers for the duration of the block; the dict fills on every forward. Hooks are removed on
    exit, also on error (Lucent's leak, greentfrapp/lucent#45)."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in resolve_layers(model, names).items():
            def hook(_module, _inputs, output, _name=name):
                store[_name] = output
            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
