"""Factor probes: how far one kind of input alone moves the model from one class of a pair to the other, measured
against how far the same kind moves the model's other class pairs (its own null). This module owns the probes'
inputs and their optimisation on the model; the pure read-out a flag rests on is ``probe_outcomes``.

A probe is an otherwise blank clip (every stream at its neutral input: the mean colour, no flow) of which only
one factor may change, with few parameters and a bounded range:

============  ========  ==============================================================================================
probe         modality  what may change
============  ========  ==============================================================================================
``colour``    rgb       one colour over the whole clip (a tint, a colour cast)
``border``    rgb       the outer ring of the frame (``global_factors.border_mask``), static, any content
``texture``   rgb       a static low-contrast pattern over the whole frame (+-0.3 of the range: a background scene)
``camera``    flow      one displacement per frame shared by every pixel (camera motion, shake)
============  ========  ==============================================================================================

For a directed pair (x over y) the probe's parameters are optimised (Adam, ``steps``) to raise logit x - logit y;
the *lever* is how much that margin rose above the blank clip's. A class the model tells from its partner by a
tint of its training clips has a large colour lever over it; an honestly confused pair, told apart by the shape
or motion of its content, has none a blank clip can express. How large is large depends on the model (how it
answers blank clips at all), so a pair's lever is judged against the levers of up to ``null_pairs`` class pairs
that share no class with it (pairs the model was trained to tell apart by their content, which a cue of the pair's
class does not touch): the empirical p-value and the ratio to their median (``probe_outcomes.probe_outcome``).

Unlike every other piece of evidence, probes do not read the visualisations: they ask the model directly, so
they neither depend on what the visualisations happened to draw nor on the decisiveness gate. What they cannot
see: cues that need the clip's content (a local patch on the moving object, a speed difference), and, on a model
whose only input is a clip of frames, motion (no probe moves frames yet).

Measured on the calibration split of the planted cases (docs/planted_cases.md, round 9).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from workers.audit.global_factors import border_mask
from workers.audit.probe_outcomes import null_class_pairs, probes_of
from workers.engine import streams as streams_mod
from workers.engine.manifest import InputSpec
from workers.engine.optimise import forward_model, frozen

TEXTURE_AMPLITUDE = 0.3
LEARNING_RATE = 0.1
INIT_SCALE = 0.01


@dataclass(frozen=True)
class ProbeSpace:
    """The parameters of one probe on one stream and how they become the stream's unit-space input."""

    shape: tuple[int, ...]                               # per row
    render: Callable[[torch.Tensor], torch.Tensor]       # (N, *shape) -> (N, C, T, H, W) unit space


def probe_space(probe: str, spec: InputSpec) -> ProbeSpace:
    """``probe``'s parameter shape and renderer on a stream of ``spec``'s shape (``probe_outcomes.PROBES`` names
    which probes apply to which modality)."""
    c, t, h, w = streams_mod.canonical_shape(spec)
    if probe == "colour":
        return ProbeSpace((c,), lambda p: torch.tanh(p).view(-1, c, 1, 1, 1).expand(-1, c, t, h, w))
    if probe == "border":
        ring = torch.as_tensor(border_mask(h, w), dtype=torch.float32)
        return ProbeSpace((c, h, w), lambda p: (torch.tanh(p) * ring.to(p.device)).view(-1, c, 1, h, w)
                          .expand(-1, c, t, h, w))
    if probe == "texture":
        return ProbeSpace((c, h, w), lambda p: (TEXTURE_AMPLITUDE * torch.tanh(p)).view(-1, c, 1, h, w)
                          .expand(-1, c, t, h, w))
    if probe == "camera":
        return ProbeSpace((c, t), lambda p: torch.tanh(p).view(-1, c, t, 1, 1).expand(-1, c, t, h, w))
    raise ValueError(f"unknown probe {probe!r}")


def directed_levers(model: nn.Module, specs: Sequence[InputSpec], stream: str, probe: str,
                    rows: Sequence[tuple[int, int]], *, steps: int, device: torch.device, bf16: bool = False,
                    channels_last: bool = False) -> np.ndarray:
    """(len(rows),): for each (x, y) of class indices, how far ``probe`` on ``stream`` alone, every other stream
    neutral, raises logit x - logit y above the blank clip's, after ``steps`` Adam steps. One batch for all rows."""
    spec = next(s for s in specs if s.name == stream)
    space = probe_space(probe, spec)
    n = len(rows)
    ix = torch.tensor([r[0] for r in rows], device=device)
    iy = torch.tensor([r[1] for r in rows], device=device)
    at = torch.arange(n, device=device)
    blank = {s.name: torch.zeros((n, *streams_mod.canonical_shape(s)), device=device) for s in specs}
    generator = torch.Generator().manual_seed(0)
    params = (INIT_SCALE * torch.randn((n, *space.shape), generator=generator)).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([params], lr=LEARNING_RATE)

    def margins(p: torch.Tensor | None) -> torch.Tensor:
        inputs = dict(blank) if p is None else {**blank, stream: space.render(p)}
        logits = forward_model(model, specs, inputs, bf16=bf16, channels_last=channels_last).float()
        return logits[at, ix] - logits[at, iy]

    with frozen(model):
        with torch.no_grad():
            base = margins(None)
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            (-margins(params).sum()).backward()
            optimiser.step()
        with torch.no_grad():
            lever = margins(params) - base
    return lever.cpu().numpy().astype(np.float64)


def measure_factor_probes(model: nn.Module, specs: Sequence[InputSpec], classes: Sequence[str], a: str, b: str, *,
                          steps: int, null_pairs: int, device: torch.device, bf16: bool = False,
                          channels_last: bool = False) -> dict[str, dict[str, dict]]:
    """stream -> probe -> {"a_over_b", "b_over_a": levers; "null": [each null pair's larger lever], "null_pairs"}
    for every probe of every stream (``probe_outcomes.PROBES``); empty without null pairs (``null_pairs`` 0, or too
    few classes)."""
    nulls = null_class_pairs(list(classes), a, b, null_pairs)
    if not nulls:
        return {}
    index = {c: i for i, c in enumerate(classes)}
    ia, ib = index[a], index[b]
    rows = [(ia, ib), (ib, ia)] + [r for x, y in nulls for r in ((index[x], index[y]), (index[y], index[x]))]
    out: dict[str, dict[str, dict]] = {}
    for spec in specs:
        for probe in probes_of(spec.modality):
            lever = directed_levers(model, specs, spec.name, probe, rows, steps=steps, device=device, bf16=bf16,
                                    channels_last=channels_last)
            null = np.maximum(lever[2::2], lever[3::2])
            out.setdefault(spec.name, {})[probe] = {
                "a_over_b": float(lever[0]), "b_over_a": float(lever[1]), "null": [float(v) for v in null],
                "null_pairs": [list(p) for p in nulls]}
    return out
