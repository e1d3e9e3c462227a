"""Model-based scores of a confused pair (DESIGN 4.4): evaluates the frozen model on the two classes'
visualisations, whole and with streams neutralised, and combines the results with the pure maps of ``scores``.

Inputs are sample sets per stream: ``{stream: (S, C, T, H, W)}`` in model space, canonical layout, S = seeds x
kappa levels of one class. Everything here runs without gradients, batched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from workers.audit import scores
from workers.engine import streams as streams_mod
from workers.engine.manifest import InputSpec
from workers.engine.optimise import forward_model, frozen, resolve_device

SampleSet = dict[str, np.ndarray]


def penultimate_layer(model: nn.Module) -> str | None:
    """Dotted name of the last ``nn.Linear`` in module order (the classifier), whose *input* is taken as the
    penultimate features; None when the model has no Linear (then logits stand in for features)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


@dataclass
class Evaluation:
    logits: np.ndarray     # (N, K)
    features: np.ndarray   # (N, F)


def evaluate(model: nn.Module, specs: Sequence[InputSpec], inputs: SampleSet, *, neutral: frozenset[str] = frozenset(),
             device: torch.device | str = "cpu", batch: int = 64) -> Evaluation:
    """Logits and penultimate features on model-space inputs; streams named in ``neutral`` replaced by their
    neutral input (mean colour, zero flow)."""
    dev = resolve_device(device)
    layer = penultimate_layer(model)
    modules = dict(model.named_modules())
    n = len(next(iter(inputs.values())))
    logits_out, feats_out = [], []
    captured: dict[str, torch.Tensor] = {}
    handle = None
    if layer is not None:
        handle = modules[layer].register_forward_pre_hook(lambda _m, args: captured.__setitem__("f", args[0]))
    try:
        with frozen(model), torch.no_grad():
            model.to(dev)
            for start in range(0, n, batch):
                unit = {}
                for spec in specs:
                    x = torch.as_tensor(inputs[spec.name][start:start + batch], dtype=torch.float32, device=dev)
                    if spec.name in neutral:
                        x = streams_mod.neutral_input(spec, len(x), device=dev)
                    unit[spec.name] = streams_mod.model_to_unit_space(x, spec)
                logits = forward_model(model, specs, unit, bf16=False, channels_last=False).float()
                logits_out.append(logits.cpu())
                feats_out.append((captured["f"] if layer is not None else logits).float().flatten(1).cpu())
    finally:
        if handle is not None:
            handle.remove()
    return Evaluation(torch.cat(logits_out).numpy(), torch.cat(feats_out).numpy())


def static_version(inputs: SampleSet, specs: Sequence[InputSpec]) -> SampleSet:
    """The same visualisations with motion removed: RGB frames replaced by their temporal mean, flow zeroed."""
    out = {}
    for spec in specs:
        x = inputs[spec.name]
        out[spec.name] = np.zeros_like(x) if spec.modality == "flow" else np.broadcast_to(
            x.mean(axis=2, keepdims=True), x.shape).copy()
    return out


def swap_drops(model: nn.Module, specs: Sequence[InputSpec], own: SampleSet, own_logits: np.ndarray,
               partner_mean: dict[str, np.ndarray], stream: str, boxes: Sequence[tuple[int, int, int, int] | None],
               target: int, other: int, *, device: torch.device | str = "cpu") -> np.ndarray:
    """(len(boxes), S): share of each sample's margin logit[target] - logit[other] (from ``own_logits``, the
    logits of ``own`` as it is) lost when the region
    box = (y0, y1, x0, x1) of ``stream`` (the whole stream for None) is replaced by the partner class's mean
    visualisation there: how much of what tells the two classes apart sits in that region."""
    n = len(own[stream])
    margin = own_logits[:, target] - own_logits[:, other]
    batch = {k: np.concatenate([v] * len(boxes)) for k, v in own.items()}
    for i, box in enumerate(boxes):
        rows = batch[stream][i * n:(i + 1) * n]
        if box is None:
            rows[...] = partner_mean[stream][None]
        else:
            y0, y1, x0, x1 = box
            rows[..., y0:y1, x0:x1] = partner_mean[stream][None, ..., y0:y1, x0:x1]
    cut = evaluate(model, specs, batch, device=device, batch=256).logits
    cut_margin = (cut[:, target] - cut[:, other]).reshape(len(boxes), n)
    return (margin[None] - cut_margin) / np.maximum(np.abs(margin[None]), 1e-6)


def scan_windows(height: int, width: int, fraction: float = 0.125) -> tuple[list[tuple[int, int, int, int]], int]:
    """Square windows of side ``fraction`` of the shorter side (at least 2 px), at a stride of half a side, that
    tile the frame; returns (boxes (y0, y1, x0, x1), side)."""
    side = max(2, int(round(fraction * min(height, width))))
    stride = max(1, side // 2)
    ys = sorted(set(list(range(0, height - side + 1, stride)) + [height - side]))
    xs = sorted(set(list(range(0, width - side + 1, stride)) + [width - side]))
    return [(y, y + side, x, x + side) for y in ys for x in xs], side


# Windows whose corner lies at least this many window sides from the peak's (in x or y) count as "elsewhere": a
# cue may spill into the windows next to its own, so those are not its competitors.
ELSEWHERE_SIDES = 2


@dataclass
class Localisation:
    """Occlusion scan of one stream for one pair, in the direction (class) whose evidence is most localised:
    how much of that class's margin over the other each window holds."""

    favours: str                 # the class whose evidence sits in the peak window (removing it costs that class)
    whole_stream_drop: float     # share of the margin lost when the whole stream is swapped (mean of both classes)
    peak_drop: float             # share of ``favours``'s margin lost when only the peak window is swapped
    peak_share: float            # peak_drop / the same class's whole-stream drop
    peak_separation: float       # peak_drop / the strongest window elsewhere in the frame
    peak_xy: tuple[float, float] # normalised centre of the peak window


def peak_window(drops: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], side: int) -> tuple[int, float]:
    """Index of the window with the largest drop and how many times the strongest window elsewhere (at least
    ``ELSEWHERE_SIDES`` sides away) it holds; inf when nothing elsewhere has a positive drop. Pure."""
    k = int(np.argmax(drops))
    y0, _, x0, _ = boxes[k]
    far = np.array([abs(y - y0) >= ELSEWHERE_SIDES * side or abs(x - x0) >= ELSEWHERE_SIDES * side
                    for y, _, x, _ in boxes])
    second = float(drops[far].max()) if far.any() else 0.0
    peak = float(drops[k])
    if second > 1e-6:
        return k, peak / second
    return k, float("inf") if peak > 0 else 0.0


def localise(model: nn.Module, specs: Sequence[InputSpec], spec: InputSpec, vis_a: SampleSet, vis_b: SampleSet,
             logits_a: np.ndarray, logits_b: np.ndarray, ia: int, ib: int, names: tuple[str, str], *,
             device: torch.device | str = "cpu") -> Localisation:
    """Swap windows of ``spec``'s stream of one class's visualisations for the other class's mean there, in both
    directions, and find the class whose margin sits most in one window. ``logits_a`` / ``logits_b``: the model's
    logits on ``vis_a`` / ``vis_b`` as they are; ``names``: (a, b)."""
    boxes, side = scan_windows(spec.height, spec.width)
    mean_a = {k: v.mean(axis=0) for k, v in vis_a.items()}
    mean_b = {k: v.mean(axis=0) for k, v in vis_b.items()}
    directions = []
    for own, logits, partner, target, other, name in ((vis_a, logits_a, mean_b, ia, ib, names[0]),
                                                      (vis_b, logits_b, mean_a, ib, ia, names[1])):
        drops = np.clip(swap_drops(model, specs, own, logits, partner, spec.name, [None, *boxes], target, other,
                                   device=device), -1.0, 1.0).mean(axis=1)
        k, separation = peak_window(drops[1:], boxes, side)
        directions.append((separation, k, drops, name))
    whole = float(np.mean([d[2][0] for d in directions]))
    separation, k, drops, name = max(directions, key=lambda d: (d[0], d[2][1 + d[1]]))
    y0, _, x0, _ = boxes[k]
    peak = float(drops[1 + k])
    return Localisation(
        favours=name, whole_stream_drop=whole, peak_drop=peak,
        peak_share=peak / float(drops[0]) if drops[0] > 1e-6 else 0.0, peak_separation=separation,
        peak_xy=((x0 + side / 2) / spec.width, (y0 + side / 2) / spec.height))


@dataclass
class StreamScores:
    feature_similarity: float          # cosine of mean penultimate features (this stream alone), centred on neutral
    separation_margin: float           # mean logit margin of each class over the other, this stream alone
    separation_share: float            # this stream's share of the whole-stream swap drops of all streams
    difference_concentration: float    # energy share of the top 5% pixels of the consistent difference map
    difference_peak_xy: tuple[float, float]   # peak of the consistent difference map
    localisation: Localisation         # occlusion scan: where the separation sits
    difference_map: np.ndarray = field(repr=False)

    @property
    def peak_xy(self) -> tuple[float, float]:
        return self.localisation.peak_xy

    def to_json(self) -> dict:
        loc = self.localisation
        return {"feature_similarity": self.feature_similarity, "separation_margin": self.separation_margin,
                "separation_share": self.separation_share, "difference_concentration": self.difference_concentration,
                "difference_peak_xy": list(self.difference_peak_xy), "whole_stream_drop": loc.whole_stream_drop,
                "peak_drop": loc.peak_drop, "peak_share": loc.peak_share,
                "peak_separation": loc.peak_separation if np.isfinite(loc.peak_separation) else None,
                "peak_xy": list(loc.peak_xy), "peak_favours": loc.favours}


@dataclass
class PairScores:
    a: str
    b: str
    cross_activation: dict[str, float]               # a_on_b: softmax of b on a's visualisations; b_on_a; *_logit_ratio
    streams: dict[str, StreamScores]
    stream_reliance: dict[str, dict[str, float]]     # class -> stream -> share of the class logit lost without it
    stream_evidence: dict[str, dict[str, float]]     # class -> stream -> its margin over the partner, stream alone
    motion_reliance: dict[str, float]                # class -> share of the logit lost when all motion is removed
    speed_invariance: dict[str, dict[str, float]]    # class -> stream -> similarity across kappa levels
    overall_feature_similarity: float
    target_softmax: dict[str, float] = field(default_factory=dict)   # class -> lowest softmax of it on its own

    def to_json(self) -> dict:
        """Plain JSON types only (numpy scalars become floats), ready for a DB JSON column."""
        return _plain({
            "cross_activation": self.cross_activation,
            "feature_similarity": self.overall_feature_similarity,
            **{name: s.to_json() for name, s in self.streams.items()},
            "stream_reliance": self.stream_reliance,
            "stream_evidence": self.stream_evidence,
            "motion_reliance": self.motion_reliance,
            "speed_invariance": self.speed_invariance,
            "target_softmax": self.target_softmax,
        })


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _logit_ratio(logits: np.ndarray, target: int, other: int) -> float:
    """How strongly ``other`` fires on ``target``'s visualisation, relative to ``target`` itself, both measured
    from the mean logit: 1 = as strongly, 0 = no more than an average class, < 0 = less."""
    base = logits.mean(axis=1)
    return float(np.mean((logits[:, other] - base) / np.maximum(logits[:, target] - base, 1e-6)))


def _relative_drop(full: np.ndarray, reduced: np.ndarray, baseline: float) -> float:
    """Share of (full - baseline) lost in ``reduced``, averaged over samples, clipped to [0, 1]."""
    gain = np.maximum(full - baseline, 1e-6)
    return float(np.clip((full - reduced) / gain, 0.0, 1.0).mean())


def score_pair(model: nn.Module, specs: Sequence[InputSpec], classes: Sequence[str], a: str, b: str,
               vis_a: SampleSet, vis_b: SampleSet, *, levels_a: Sequence[int], levels_b: Sequence[int],
               device: torch.device | str = "cpu") -> PairScores:
    """All scores of one pair. ``levels_a[i]`` is the kappa level of sample i of ``vis_a`` (for speed invariance)."""
    ia, ib = classes.index(a), classes.index(b)
    names = [s.name for s in specs]
    full_a, full_b = evaluate(model, specs, vis_a, device=device), evaluate(model, specs, vis_b, device=device)
    neutral_all = evaluate(model, specs, {k: v[:1] for k, v in vis_a.items()}, neutral=frozenset(names),
                           device=device)
    base_logits, base_feat = neutral_all.logits[0], neutral_all.features[0]

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    cross = {
        "a_on_b": float(softmax(full_a.logits)[:, ib].mean()),
        "b_on_a": float(softmax(full_b.logits)[:, ia].mean()),
        "a_on_b_logit_ratio": _logit_ratio(full_a.logits, ia, ib),
        "b_on_a_logit_ratio": _logit_ratio(full_b.logits, ib, ia),
    }
    target_softmax = {a: float(softmax(full_a.logits)[:, ia].min()), b: float(softmax(full_b.logits)[:, ib].min())}
    overall_sim = scores.cosine_similarity(full_a.features.mean(0) - base_feat, full_b.features.mean(0) - base_feat)

    per_stream: dict[str, StreamScores] = {}
    margins: dict[str, float] = {}
    reliance: dict[str, dict[str, float]] = {a: {}, b: {}}
    evidence: dict[str, dict[str, float]] = {a: {}, b: {}}
    only: dict[str, tuple[Evaluation, Evaluation]] = {}
    for name in names:
        others = frozenset(n for n in names if n != name)
        only[name] = (evaluate(model, specs, vis_a, neutral=others, device=device),
                      evaluate(model, specs, vis_b, neutral=others, device=device))
        ea, eb = only[name]
        evidence[a][name] = float((ea.logits[:, ia] - ea.logits[:, ib]).mean())
        evidence[b][name] = float((eb.logits[:, ib] - eb.logits[:, ia]).mean())
        margins[name] = (evidence[a][name] + evidence[b][name]) / 2
        if len(names) > 1:
            without_a = evaluate(model, specs, vis_a, neutral=frozenset({name}), device=device)
            without_b = evaluate(model, specs, vis_b, neutral=frozenset({name}), device=device)
            reliance[a][name] = _relative_drop(full_a.logits[:, ia], without_a.logits[:, ia], base_logits[ia])
            reliance[b][name] = _relative_drop(full_b.logits[:, ib], without_b.logits[:, ib], base_logits[ib])
        else:
            reliance[a][name] = reliance[b][name] = 1.0
    located = {spec.name: localise(model, specs, spec, vis_a, vis_b, full_a.logits, full_b.logits, ia, ib, (a, b),
                                   device=device) for spec in specs}
    total_drop = sum(max(loc.whole_stream_drop, 0.0) for loc in located.values())
    for spec in specs:
        name = spec.name
        ea, eb = only[name]
        loc = located[name]
        tmap = scores.consistent_difference_map(vis_a[name], vis_b[name], spec.modality)
        per_stream[name] = StreamScores(
            feature_similarity=scores.cosine_similarity(ea.features.mean(0) - base_feat, eb.features.mean(0) - base_feat),
            separation_margin=margins[name],
            separation_share=max(loc.whole_stream_drop, 0.0) / total_drop if total_drop > 0 else 0.0,
            difference_concentration=scores.energy_concentration(tmap),
            difference_peak_xy=scores.peak_xy(tmap),
            localisation=loc,
            difference_map=tmap,
        )
    motion = {}
    for cls, vis, idx, full in ((a, vis_a, ia, full_a), (b, vis_b, ib, full_b)):
        static = evaluate(model, specs, static_version(vis, specs), device=device)
        motion[cls] = _relative_drop(full.logits[:, idx], static.logits[:, idx], base_logits[idx])
    speed: dict[str, dict[str, float]] = {}
    for cls, vis, levels in ((a, vis_a, levels_a), (b, vis_b, levels_b)):
        lv = np.asarray(levels)
        speed[cls] = {spec.name: scores.speed_invariance(
            [vis[spec.name][lv == level] for level in sorted(set(levels))], spec.modality) for spec in specs}
    return PairScores(a=a, b=b, cross_activation=cross, streams=per_stream, stream_reliance=reliance,
                      stream_evidence=evidence, motion_reliance=motion, speed_invariance=speed,
                      overall_feature_similarity=overall_sim, target_softmax=target_softmax)
