"""Factor probes: how far one kind of input alone moves the model from one class of a pair to the other, and towards
each class of a sample of the model's classes (its own null). This module owns the probes' inputs and their
optimisation on the model; how a measured probe is read, and which classes are sampled, is ``probe_outcomes``.

A probe is an otherwise blank clip (every stream at its neutral input: the mean colour, no flow) of which only
one factor may change, with few parameters and a bounded range:

============  ========  ==============================================================================================
probe         modality  what may change
============  ========  ==============================================================================================
``colour``    rgb       one colour over the whole clip, within +-``COLOUR_AMPLITUDE`` (a tint, a colour cast)
``border``    rgb       the outer ring of the frame (``global_factors.border_mask``), static, any content
``texture``   rgb       a static low-contrast pattern over the whole frame (+-0.3 of the range: a background scene)
``camera``    flow      one displacement per frame shared by every pixel (camera motion, shake)
``patch``     rgb       static content of one window of the frame (a logo, a caption, a watermark); local
``spot``      flow      one displacement per frame over one window, less its mean over the frames (a flicker, a
                        jittering overlay, a blinking light read as motion); local
============  ========  ==============================================================================================

A *local* probe (``probe_outcomes.LOCAL_PROBES``) tiles the frame into ``LOCAL_GRID`` x ``LOCAL_GRID`` windows
(``window_masks``), optimises its content in every window at once, then measures each window's part alone: its
lever is one per window, and ``probe_outcomes.local_probe_outcome`` reads a pair's in the window where it is
largest against the other pairs' levers *in that window*. A window costs a forward pass per row, so a local probe
costs about as much as a whole-frame one and ``LOCAL_GRID ** 2`` forward passes more.

For a directed pair (x over y) the probe's parameters are optimised (Adam, ``steps``) to raise logit x - logit y;
the *lever* is how much that margin rose above the blank clip's. A class the model tells from its partner by a
tint of its training clips has a large colour lever over it; an honestly confused pair, told apart by the shape
or motion of its content, has none a blank clip can express. How large is large depends on the model (how it
answers blank clips at all), so every directed lever among the pair and up to ``other_classes`` other classes is
measured (one batch per probe), and ``probe_outcomes`` reads the pair's against the other pairs' and the holder's
pull towards the factor against the other classes'. Each lever depends on its row alone (its own seeded start, the
model in eval mode), so the pairs of one audit share them through a ``LeverCache``: a model of up to
``other_classes`` + 2 classes has one matrix, measured once for the whole audit instead of once per pair.

Unlike every other piece of evidence, probes do not read the visualisations: they ask the model directly, so
they neither depend on what the visualisations happened to draw nor on the decisiveness gate. What they cannot
see: cues that need the clip's content (a patch on the moving object, a speed difference), and, on a model whose
only input is a clip of frames, motion of the whole frame (no probe moves frames yet).

Measured on the calibration split of the planted cases (docs/planted_cases.md, rounds 9, 10 and 13).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from workers.audit.global_factors import border_mask
from workers.audit.probe_outcomes import LOCAL_PROBES, probe_classes, probes_of
from workers.engine import streams as streams_mod
from workers.engine.manifest import InputSpec
from workers.engine.optimise import forward_model, frozen

TEXTURE_AMPLITUDE = 0.3
# A tint of +-0.1 in unit space (+-0.05 of the pixel range, whatever the input's std): the scale of a white-balance or
# lighting difference. Unbounded (1.0, rounds 9-14) the colour pushed every class of a model by tens to hundreds of
# logits with colours far outside any clip. Round 15 of docs/planted_cases.md: on the calibration split
# STATIC_FACTOR_CUE found 20 of 39 cues at 0.1 instead of 18, for one more wrong flag (on a planted blink pair) and no
# more clean pairs flagged (0.3: 19, and one more clean pair flagged); on the fresh held-out draw 260-279, 23 of 52
# cues found instead of 21 (colour casts 4/7 instead of 2/7) for no more wrong flags.
COLOUR_AMPLITUDE = 0.1
LEARNING_RATE = 0.1
INIT_SCALE = 0.01
ROW_SEED = 1_000_003   # each row (x, y) starts from its own draw, seeded ROW_SEED * x + y: the same in any batch
LOCAL_GRID = 4         # local probes tile the frame into LOCAL_GRID x LOCAL_GRID windows

# (stream, probe, steps, x, y) -> the lever of class index x over y (a probe of the whole frame) or its lever in each
# window alone (a local probe, ``window_masks`` order): the levers already measured on one model, on one device and
# precision, shared by the pairs of an audit (``measure_factor_probes``)
Lever = float | list[float]
LeverCache = dict[tuple[str, str, int, int, int], Lever]


@dataclass(frozen=True)
class ProbeSpace:
    """The parameters of one probe on one stream and how they become the stream's unit-space input. A local probe
    (``local``) is rendered through (1, G', H, W) window masks (``window_masks``): from parameters per window,
    (N, G', *shape), when ``per_window``, else from one (N, *shape) whose pixels the masks keep."""

    shape: tuple[int, ...]                               # per row (per row and window when per_window)
    render: Callable[..., torch.Tensor]                  # -> (N, C, T, H, W) unit space
    local: bool = False
    per_window: bool = False


def window_masks(height: int, width: int) -> torch.Tensor:
    """(G, H, W) float: the frame tiled into ``LOCAL_GRID`` x ``LOCAL_GRID`` windows, row by row (the last ones take
    any remainder)."""
    grid = LOCAL_GRID
    ys = np.linspace(0, height, grid + 1).round().astype(int)
    xs = np.linspace(0, width, grid + 1).round().astype(int)
    masks = torch.zeros((grid * grid, height, width))
    for r in range(grid):
        for c in range(grid):
            masks[r * grid + c, ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = 1.0
    return masks


def _changing(p: torch.Tensor) -> torch.Tensor:
    """tanh(p) of (..., T) less its mean over T: what changes from frame to frame, nothing that stays."""
    v = torch.tanh(p)
    return v - v.mean(dim=-1, keepdim=True)


def probe_space(probe: str, spec: InputSpec) -> ProbeSpace:
    """``probe``'s parameter shape and renderer on a stream of ``spec``'s shape (``probe_outcomes.PROBES`` names
    which probes apply to which modality)."""
    c, t, h, w = streams_mod.canonical_shape(spec)
    if probe == "colour":
        return ProbeSpace((c,), lambda p: (COLOUR_AMPLITUDE * torch.tanh(p)).view(-1, c, 1, 1, 1)
                          .expand(-1, c, t, h, w))
    if probe == "border":
        ring = torch.as_tensor(border_mask(h, w), dtype=torch.float32)
        return ProbeSpace((c, h, w), lambda p: (torch.tanh(p) * ring.to(p.device)).view(-1, c, 1, h, w)
                          .expand(-1, c, t, h, w))
    if probe == "texture":
        return ProbeSpace((c, h, w), lambda p: (TEXTURE_AMPLITUDE * torch.tanh(p)).view(-1, c, 1, h, w)
                          .expand(-1, c, t, h, w))
    if probe == "camera":
        return ProbeSpace((c, t), lambda p: torch.tanh(p).view(-1, c, t, 1, 1).expand(-1, c, t, h, w))
    if probe == "patch":      # any static content, within one window
        return ProbeSpace((c, h, w), lambda p, m: (torch.tanh(p) * m.sum(dim=1)[:, None])[:, :, None]
                          .expand(-1, c, t, h, w), local=True)
    if probe == "spot":       # one displacement per frame over one window, changing from frame to frame
        return ProbeSpace((c, t), lambda p, m: torch.einsum("ngct,nghw->ncthw", _changing(p), m.expand(
            len(p), -1, -1, -1)), local=True, per_window=True)
    raise ValueError(f"unknown probe {probe!r}")


def _row_params(rows: Sequence[tuple[int, int]], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([INIT_SCALE * torch.randn(shape, generator=torch.Generator().manual_seed(ROW_SEED * x + y))
                        for x, y in rows])


def directed_levers(model: nn.Module, specs: Sequence[InputSpec], stream: str, probe: str,
                    rows: Sequence[tuple[int, int]], *, steps: int, device: torch.device, bf16: bool = False,
                    channels_last: bool = False) -> list[Lever]:
    """For each (x, y) of class indices, how far ``probe`` on ``stream`` alone, every other stream neutral, raises
    logit x - logit y above the blank clip's, after ``steps`` Adam steps; one batch for all rows. A local probe is
    optimised over every window of the frame at once, then each window's part is measured alone: its lever is one
    per window."""
    spec = next(s for s in specs if s.name == stream)
    space = probe_space(probe, spec)
    n = len(rows)
    ix = torch.tensor([r[0] for r in rows], device=device)
    iy = torch.tensor([r[1] for r in rows], device=device)
    at = torch.arange(n, device=device)
    blank = {s.name: torch.zeros((n, *streams_mod.canonical_shape(s)), device=device) for s in specs}

    def margins(unit: torch.Tensor | None) -> torch.Tensor:
        inputs = dict(blank) if unit is None else {**blank, stream: unit}
        logits = forward_model(model, specs, inputs, bf16=bf16, channels_last=channels_last).float()
        return logits[at, ix] - logits[at, iy]

    if space.local:
        _, _, h, w = streams_mod.canonical_shape(spec)
        masks = window_masks(h, w).to(device)
        render = lambda p: space.render(p, masks[None])                                      # noqa: E731
        shape = (len(masks), *space.shape) if space.per_window else space.shape
    else:
        render, shape = space.render, space.shape
    params = _row_params(rows, shape).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([params], lr=LEARNING_RATE)
    with frozen(model):
        with torch.no_grad():
            base = margins(None)
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            (-margins(render(params)).sum()).backward()
            optimiser.step()
        with torch.no_grad():
            if not space.local:
                return [float(v) for v in (margins(render(params)) - base).cpu().numpy()]
            alone = torch.stack([margins(space.render(params[:, g:g + 1] if space.per_window else params,
                                                      masks[None, g:g + 1])) - base for g in range(len(masks))],
                                dim=1)
    return [[float(v) for v in row] for row in alone.cpu().numpy()]


def measure_factor_probes(model: nn.Module, specs: Sequence[InputSpec], classes: Sequence[str], a: str, b: str, *,
                          steps: int, other_classes: int, device: torch.device, bf16: bool = False,
                          channels_last: bool = False, cache: LeverCache | None = None) -> dict[str, dict[str, dict]]:
    """stream -> probe -> {"classes": the pair and up to ``other_classes`` others (``probe_classes``), "levers":
    [x][y] the directed lever of x over y, None on the diagonal} for every probe of every stream
    (``probe_outcomes.PROBES``); empty without other classes (``other_classes`` 0, or a model of two classes).
    Levers ``cache`` holds are not measured again; the ones measured are added to it."""
    sample = probe_classes(list(classes), a, b, other_classes)
    if len(sample) < 3:
        return {}
    index = {c: i for i, c in enumerate(classes)}
    cells = [(x, y) for x in range(len(sample)) for y in range(len(sample)) if x != y]
    rows = [(index[sample[x]], index[sample[y]]) for x, y in cells]
    cache = {} if cache is None else cache
    out: dict[str, dict[str, dict]] = {}
    for spec in specs:
        for probe in probes_of(spec.modality):
            missing = [row for row in rows if (spec.name, probe, steps, *row) not in cache]
            if missing:
                measured = directed_levers(model, specs, spec.name, probe, missing, steps=steps, device=device,
                                           bf16=bf16, channels_last=channels_last)
                cache.update({(spec.name, probe, steps, *row): v for row, v in zip(missing, measured)})
            matrix: list[list[Lever | None]] = [[None] * len(sample) for _ in sample]
            for (x, y), row in zip(cells, rows):
                matrix[x][y] = cache[(spec.name, probe, steps, *row)]
            test: dict = {"classes": sample}
            if probe in LOCAL_PROBES:
                test.update(grid=LOCAL_GRID, window_levers=matrix)
            else:
                test["levers"] = matrix
            out.setdefault(spec.name, {})[probe] = test
    return out
