"""The model evaluations of a confused pair (DESIGN 4.4), run where the model is loaded (the GPU worker): the
frozen model on the two classes' visualisations, whole, with streams neutralised, without motion, and with
regions swapped for the partner's. The result, ``PairEvidence``, is plain numbers; everything else about a pair
(difference maps, speed invariance, flags) is pure maths on stored arrays (``analysis``, ``flags``).

Localisation spends its evaluations where the evidence is. One backward pass per sample and path point gives an
integrated-gradients attribution of the class margin along the straight path from the partner's mean
visualisation to the class's own (all streams at once); summed over a window, it estimates how much of the margin
swapping that window would cost, for every window at once. Only the few windows the estimate ranks highest, the
strongest-estimated windows elsewhere in the frame and a fixed sample of other windows are then verified by the
swap test itself, so a LOCALIZED_CUE still rests on a measured loss of margin. The exhaustive scan it replaces
evaluated every window (226 on a 32 px frame) for every sample.

Inputs are sample sets per stream: ``{stream: (S, C, T, H, W)}`` in model space, canonical layout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from workers.audit import factor_probes, global_factors, scores
from workers.audit.analysis import (
    Localisation,
    far_from,
    peak_consistency,
    peak_window,
    plain_json,
    scan_windows,
    window_sums,
)
from workers.engine import cost as cost_mod
from workers.engine import streams as streams_mod
from workers.engine.manifest import InputSpec
from workers.engine.optimise import forward_model, frozen, resolve_device, to_channels_last

SampleSet = dict[str, np.ndarray]
Box = tuple[int, int, int, int]


PROBE_OTHER_CLASSES = 10   # the classes besides the pair that factor probes sample when an audit asks for them


@dataclass(frozen=True)
class EvidenceConfig:
    """How much the localisation spends. Defaults: 2 path points (midpoint rule) rank the windows as well as 4 or 8
    did on the reference benchmark (the planted window is the estimate's top window either way); the points saved
    pay for verifying more windows elsewhere: 3 candidates, the 6 strongest-estimated windows elsewhere and 2 fixed
    others per class and stream (12 swap tests with the whole stream). On the reference model the pair's own
    scoring costs under a tenth of its visualisation, its null scans about 0.3x more, the factor probes (off
    unless asked for) about 9.5x more for the first pair of an audit and nothing more for the others, which share
    its levers when the model has up to PROBE_OTHER_CLASSES + 2 classes (tests/benchmarks/scoring_cost.py)."""

    localisation: Literal["attribution", "exhaustive"] = "attribution"   # exhaustive: swap every window (the
    #                                                        scan this replaces; ~10x the cost, kept for comparison)
    path_steps: int = 2
    candidates: int = 3
    elsewhere_estimated: int = 6
    elsewhere_sampled: int = 2
    window_fraction: float = 0.125
    null_partners: int = 2       # per class of a pair: audited classes it is not confused with, whose scans with
    #                              it give the model's own null of LOCALIZED_CUE (``ranking.null_pairs``)
    probe_other_classes: int = 0  # classes besides the pair whose factor probes are the pair's null
    #                               (``factor_probes``); 0: no probes (the default: they cost ~9.5x a pair's
    #                               visualisation, once per audit on a small model; ``AuditOptions.factor_probes``
    #                               asks for PROBE_OTHER_CLASSES)
    probe_steps: int = 60        # Adam steps of each factor probe
    batch: int = 256             # rows per forward on the CPU; on CUDA ``cuda_batch``
    cuda_batch: int = 1024


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


class PairEvaluator:
    """The frozen model on one device: batched forwards (bf16 autocast and channels_last on CUDA, like the
    engine) and input gradients of a class margin."""

    def __init__(self, model: nn.Module, specs: Sequence[InputSpec], *, device: torch.device | str | None = None,
                 config: EvidenceConfig | None = None) -> None:
        self.model, self.specs = model, list(specs)
        self.device = resolve_device(device)
        self.config = config or EvidenceConfig()
        self.bf16 = self.channels_last = self.device.type == "cuda"
        self.batch = self.config.cuda_batch if self.device.type == "cuda" else self.config.batch
        self.layer = penultimate_layer(model)
        model.to(self.device)  # once: every evaluation below runs on this device and memory format
        if self.channels_last:
            to_channels_last(model)

    def _unit(self, inputs: SampleSet, start: int, stop: int, neutral: frozenset[str]) -> dict[str, torch.Tensor]:
        unit = {}
        for spec in self.specs:
            x = torch.as_tensor(np.ascontiguousarray(inputs[spec.name][start:stop]), dtype=torch.float32,
                                device=self.device)
            if spec.name in neutral:
                x = streams_mod.neutral_input(spec, len(x), device=self.device)
            unit[spec.name] = streams_mod.model_to_unit_space(x, spec)
        return unit

    def evaluate(self, inputs: SampleSet, *, neutral: frozenset[str] = frozenset()) -> Evaluation:
        """Logits and penultimate features on model-space inputs; streams named in ``neutral`` replaced by their
        neutral input (mean colour, zero flow)."""
        modules = dict(self.model.named_modules())
        n = len(next(iter(inputs.values())))
        logits_out, feats_out = [], []
        captured: dict[str, torch.Tensor] = {}
        handle = None
        if self.layer is not None:
            handle = modules[self.layer].register_forward_pre_hook(
                lambda _m, args: captured.__setitem__("f", args[0]))
        try:
            with frozen(self.model), torch.no_grad():
                for start in range(0, n, self.batch):
                    logits = forward_model(self.model, self.specs,
                                           self._unit(inputs, start, start + self.batch, neutral),
                                           bf16=self.bf16, channels_last=self.channels_last).float()
                    logits_out.append(logits.cpu())
                    feats_out.append((captured["f"] if self.layer is not None else logits).float().flatten(1).cpu())
        finally:
            if handle is not None:
                handle.remove()
        return Evaluation(torch.cat(logits_out).numpy(), torch.cat(feats_out).numpy())

    def path_attribution(self, own: SampleSet, partner_mean: SampleSet, target: int,
                         other: int) -> dict[str, np.ndarray]:
        """Integrated gradients of the margin logit[target] - logit[other] along the straight path from
        ``partner_mean`` (every stream, (C, T, H, W)) to each sample of ``own`` (S, C, T, H, W), midpoint rule with
        ``path_steps`` points. Returns per stream (S, H, W): the attribution summed over channels and frames; over
        all pixels and streams it adds up to about margin(own) - margin(partner_mean)."""
        steps = self.config.path_steps
        alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
        n = len(own[self.specs[0].name])
        # rows: sample-major, then path point
        path = {s.name: (partner_mean[s.name][None, None] + alphas[None, :, None, None, None, None]
                         * (own[s.name] - partner_mean[s.name][None])[:, None])
                        .reshape(n * steps, *own[s.name].shape[1:])
                for s in self.specs}
        grads: dict[str, list[np.ndarray]] = {s.name: [] for s in self.specs}
        with frozen(self.model):
            for start in range(0, n * steps, self.batch):
                unit = {k: v.requires_grad_(True) for k, v in self._unit(path, start, start + self.batch,
                                                                         frozenset()).items()}
                logits = forward_model(self.model, self.specs, unit, bf16=self.bf16,
                                       channels_last=self.channels_last).float()
                margin = logits[:, target] - logits[:, other]
                got = torch.autograd.grad(margin.sum(), [unit[s.name] for s in self.specs])
                for spec, g in zip(self.specs, got):
                    # d margin / d model-space input = d margin / d unit * d unit / d model-space
                    grads[spec.name].append(_to_model_space_gradient(g, spec).float().cpu().numpy())
        out = {}
        for spec in self.specs:
            g = np.concatenate(grads[spec.name]).reshape(n, steps, *own[spec.name].shape[1:]).mean(axis=1)
            out[spec.name] = (g * (own[spec.name] - partner_mean[spec.name][None])).sum(axis=(1, 2))
        return out

    def swap_drops(self, own: SampleSet, own_logits: np.ndarray, partner_mean: SampleSet, stream: str,
                   boxes: Sequence[Box | None], target: int, other: int) -> np.ndarray:
        """(len(boxes), S): share of each sample's margin logit[target] - logit[other] (``own_logits``: the logits
        of ``own`` as it is) lost when the region box = (y0, y1, x0, x1) of ``stream`` (the whole stream for None)
        is replaced by the partner class's mean visualisation there."""
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
        cut = self.evaluate(batch).logits
        cut_margin = (cut[:, target] - cut[:, other]).reshape(len(boxes), n)
        return (margin[None] - cut_margin) / np.maximum(np.abs(margin[None]), 1e-6)


def _to_model_space_gradient(grad_unit: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Chain rule through the (affine, per-channel) unit -> model space map:
    d/dx_model = d/dx_unit / (dx_model/dx_unit)."""
    one = torch.ones((1, *grad_unit.shape[1:]), dtype=torch.float32, device=grad_unit.device)
    zero = torch.zeros_like(one)
    slope = streams_mod.unit_to_model_space(one, spec) - streams_mod.unit_to_model_space(zero, spec)
    return grad_unit.float() / slope


def choose_windows(estimate: np.ndarray, boxes: Sequence[Box], side: int, config: EvidenceConfig,
                   seed: int) -> tuple[list[int], list[int]]:
    """Which windows to verify, from the estimated drops (len(boxes),): up to ``candidates`` peaks (mutually at
    least one side apart) and, elsewhere (at least ``ELSEWHERE_SIDES`` sides from the best candidate), the
    ``elsewhere_estimated`` strongest-estimated windows plus ``elsewhere_sampled`` drawn with ``seed``. Pure."""
    order = [int(i) for i in np.argsort(-estimate, kind="stable")]
    peaks: list[int] = []
    for i in order:
        if len(peaks) == config.candidates:
            break
        if all(far_from(boxes[i], boxes[j], side, 1) for j in peaks):
            peaks.append(i)
    far = [i for i in order if far_from(boxes[i], boxes[peaks[0]], side)]
    strongest = far[:config.elsewhere_estimated]
    rest = far[config.elsewhere_estimated:]
    rng = np.random.default_rng(seed)
    sampled = [int(i) for i in rng.choice(rest, size=min(config.elsewhere_sampled, len(rest)), replace=False)] \
        if rest else []
    return peaks, strongest + sampled


def calibrated_drops(estimate: np.ndarray, verified: Sequence[int], measured: np.ndarray,
                     factor: float | None = None) -> np.ndarray:
    """Best knowledge of every window's drop: the measured drop where a window was verified, elsewhere its estimate
    rescaled by the least-squares factor (through the origin) that maps the verified windows' estimates to their
    measured drops. The attribution overestimates swaps by a factor that differs between models and streams
    (0.6-1.0 on the reference benchmark); used raw, one unverified window elsewhere can hide a real cue. Works per
    window (W,) or per window and sample (W, S); ``factor`` defaults to the fit on these arrays. Pure."""
    idx = np.asarray(verified, dtype=int)
    drops = estimate * (calibration_factor(estimate[idx], measured) if factor is None else factor)
    drops[idx] = measured
    return drops


def calibration_factor(estimated: np.ndarray, measured: np.ndarray) -> float:
    """The least-squares factor through the origin from estimated to measured drops (never negative; 1 when the
    estimates are all zero). Pure."""
    denominator = float(np.sum(estimated * estimated))
    return max(float(np.sum(measured * estimated)) / denominator, 0.0) if denominator > 1e-12 else 1.0


def localise_stream(evaluator: PairEvaluator, spec: InputSpec, directions: Sequence[tuple], seed: int) -> Localisation:
    """Localisation of one stream. ``directions``: per class (own samples, own logits, partner mean, target,
    other, class name, attribution of this stream (S, H, W)). The class whose verified peak stands out most is
    the one named."""
    boxes, side = scan_windows(spec.height, spec.width, evaluator.config.window_fraction)
    found = []
    for own, logits, partner, target, other, name, attribution in directions:
        if attribution is None:  # exhaustive: every window measured
            per_sample = np.clip(evaluator.swap_drops(own, logits, partner, spec.name, [None, *boxes], target, other),
                                 -1.0, 1.0)
            drops = per_sample.mean(axis=1)
            k, separation = peak_window(drops[1:], boxes, side)
            found.append((separation, k, float(drops[1 + k]), float(drops[0]), name, per_sample[1:]))
            continue
        margin = np.maximum(np.abs(logits[:, target] - logits[:, other]), 1e-6)
        per_sample_estimate = np.clip(window_sums(attribution, boxes) / margin[:, None], -1.0, 1.0).T   # (W, S)
        estimate = per_sample_estimate.mean(axis=1)
        peaks, elsewhere = choose_windows(estimate, boxes, side, evaluator.config, seed)
        verified = [*peaks, *elsewhere]
        measured = np.clip(evaluator.swap_drops(own, logits, partner, spec.name, [None, *[boxes[i] for i in verified]],
                                                target, other), -1.0, 1.0)
        factor = calibration_factor(estimate[verified], measured[1:].mean(axis=1))
        drops = calibrated_drops(estimate, verified, measured[1:].mean(axis=1), factor)
        per_sample = calibrated_drops(per_sample_estimate, verified, measured[1:], factor)
        k = max(peaks, key=lambda i: drops[i])
        _, separation = peak_window(drops, boxes, side, peak=k)
        found.append((separation, k, float(drops[k]), float(measured[0].mean()), name, per_sample))
    whole = float(np.mean([f[3] for f in found]))
    separation, k, peak, own_whole, name, per_sample = max(found, key=lambda f: (f[0], f[2]))
    wins, samples, p_value = peak_consistency(per_sample, boxes, side, k)
    y0, _, x0, _ = boxes[k]
    return Localisation(favours=name, whole_stream_drop=whole, peak_drop=peak,
                        peak_share=peak / own_whole if own_whole > 1e-6 else 0.0, peak_separation=separation,
                        peak_xy=((x0 + side / 2) / spec.width, (y0 + side / 2) / spec.height),
                        peak_wins=wins, samples=samples, p_value=p_value)


@dataclass
class PairEvidence:
    """Every number about a pair that needs the model; plain JSON (``to_json`` / ``from_json``)."""

    a: str
    b: str
    cross_activation: dict[str, float]
    target_softmax: dict[str, float]
    overall_feature_similarity: float
    stream_feature_similarity: dict[str, float]
    stream_evidence: dict[str, dict[str, float]]
    stream_reliance: dict[str, dict[str, float]]
    motion_reliance: dict[str, float]
    localisation: dict[str, Localisation]
    cost: dict[str, int] = field(default_factory=dict)
    # class -> stream -> {every other class of the model: the class's mean margin over it, this stream alone}; the
    # model-relative baseline of the one-stream flags (evidence stored before it existed has none)
    stream_margins: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # class -> "full" | "static" -> {every other class: the class's margin over it}, on its visualisations as they
    # are and with motion removed: the same baseline for a single-stream model's static and moving parts
    motion_margins: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # stream -> global factor -> the factor's swap test (``measure_global_factors``); empty for evidence stored
    # before it existed
    global_factors: dict[str, dict[str, dict]] = field(default_factory=dict)
    # the same occlusion scan on class pairs of the audit the model is not confused on (``ranking.null_pairs``):
    # [{"a", "b", "streams": {stream: {"peak_separation" (None: infinite), "peak_drop", "whole_stream_drop"}},
    # "global_factors": {stream: {factor: ``margin_change`` of a given b's value of the factor}}}], the model's own
    # null of ``LOCALIZED_CUE`` and of ``GLOBAL_APPEARANCE_CUE``, then the null pairs that get the global swaps alone
    # (``_null_swaps``: "streams" empty); empty for evidence stored before it existed (and no "global_factors" in
    # scans stored before 2026-12-07)
    null_localisation: list[dict] = field(default_factory=list)
    # stream -> factor probe -> {"classes", "levers"} (``factor_probes``); empty for
    # evidence stored before it existed or measured without probes
    factor_probes: dict[str, dict[str, dict]] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["localisation"] = {k: {**asdict(v), "peak_xy": list(v.peak_xy),
                                   "peak_separation": v.peak_separation if np.isfinite(v.peak_separation) else None}
                               for k, v in self.localisation.items()}
        return plain_json(out)

    @classmethod
    def from_json(cls, data: dict) -> "PairEvidence":
        loc = {k: Localisation(**{**v, "peak_xy": tuple(v["peak_xy"]),
                                  "peak_separation": float("inf") if v["peak_separation"] is None
                                  else v["peak_separation"]})
               for k, v in data["localisation"].items()}
        return cls(**{**data, "localisation": loc})


def static_version(inputs: SampleSet, specs: Sequence[InputSpec]) -> SampleSet:
    """The same visualisations with motion removed: RGB frames replaced by their temporal mean, flow zeroed."""
    out = {}
    for spec in specs:
        x = inputs[spec.name]
        out[spec.name] = np.zeros_like(x) if spec.modality == "flow" else np.broadcast_to(
            x.mean(axis=2, keepdims=True), x.shape).copy()
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logit_ratio(logits: np.ndarray, target: int, other: int) -> float:
    """How strongly ``other`` fires on ``target``'s visualisation, relative to ``target`` itself, both measured
    from the mean logit: 1 = as strongly, 0 = no more than an average class, < 0 = less."""
    base = logits.mean(axis=1)
    return float(np.mean((logits[:, other] - base) / np.maximum(logits[:, target] - base, 1e-6)))


def _margins_over_others(logits: np.ndarray, idx: int, classes: Sequence[str]) -> dict[str, float]:
    """{every class but ``idx``: mean over samples of logit[idx] - logit[that class]}."""
    over = (logits[:, idx:idx + 1] - logits).mean(axis=0)
    return {c: float(m) for j, (c, m) in enumerate(zip(classes, over)) if j != idx}


def _relative_drop(full: np.ndarray, reduced: np.ndarray, baseline: float) -> float:
    """Share of (full - baseline) lost in ``reduced``, averaged over samples, clipped to [0, 1]."""
    gain = np.maximum(full - baseline, 1e-6)
    return float(np.clip((full - reduced) / gain, 0.0, 1.0).mean())


def measure_pair_evidence(model: nn.Module, specs: Sequence[InputSpec], classes: Sequence[str], a: str, b: str,
                          vis_a: SampleSet, vis_b: SampleSet, *, device: torch.device | str | None = None,
                          config: EvidenceConfig | None = None, null_pairs: Sequence[tuple[str, str]] = (),
                          null_vis: dict[str, SampleSet] | None = None,
                          swap_null_pairs: Sequence[tuple[str, str]] = (),
                          probe_cache: factor_probes.LeverCache | None = None) -> PairEvidence:
    """Every model evaluation of one pair, in named parts: how each class reads on the other, what each stream
    holds on its own and what the class loses without it, what motion adds, and where the separation sits; and
    the same localisation on ``null_pairs`` (each (``a`` or ``b``, another class whose visualisations
    ``null_vis`` holds)), the model's own null for ``LOCALIZED_CUE``; the global factors' swap tests alone on
    ``swap_null_pairs`` (more of their null, at one evaluation a pair); and the factor probes of the pair and of
    a sample of the model's other classes (``factor_probes``; ``probe_cache`` shares their levers between the pairs of
    one audit on the same model, device and precision)."""
    evaluator = PairEvaluator(model, specs, device=device, config=config)
    ia, ib = classes.index(a), classes.index(b)
    with cost_mod.count_evaluations() as spent:
        full_a, full_b = evaluator.evaluate(vis_a), evaluator.evaluate(vis_b)
        names = [s.name for s in specs]
        neutral = evaluator.evaluate({k: v[:1] for k, v in vis_a.items()}, neutral=frozenset(names))
        base_logits, base_feat = neutral.logits[0], neutral.features[0]
        cross, target_softmax, overall = _cross_activation(full_a, full_b, ia, ib, a, b, base_feat)
        sims, evidence, reliance, margins = _stream_parts(evaluator, classes, vis_a, vis_b, full_a, full_b, ia, ib,
                                                          base_logits, base_feat)
        motion, motion_margins = {}, {}
        for cls, vis, idx, full in ((a, vis_a, ia, full_a), (b, vis_b, ib, full_b)):
            still = evaluator.evaluate(static_version(vis, specs)).logits
            motion[cls] = _relative_drop(full.logits[:, idx], still[:, idx], base_logits[idx])
            motion_margins[cls] = {"full": _margins_over_others(full.logits, idx, classes),
                                   "static": _margins_over_others(still, idx, classes)}
        located = _localise(evaluator, vis_a, vis_b, full_a, full_b, ia, ib, a, b)
        factors = measure_global_factors(evaluator, vis_a, vis_b, full_a.logits, full_b.logits, ia, ib, a, b)
        own = {a: (vis_a, full_a), b: (vis_b, full_b)}
        null = _null_scans(evaluator, classes, null_pairs, own, null_vis or {})
        null += _null_swaps(evaluator, classes, swap_null_pairs, own, null_vis or {})
        probes = factor_probes.measure_factor_probes(
            model, specs, classes, a, b, steps=evaluator.config.probe_steps,
            other_classes=evaluator.config.probe_other_classes, device=evaluator.device, bf16=evaluator.bf16,
            channels_last=evaluator.channels_last, cache=probe_cache)
    return PairEvidence(a=a, b=b, cross_activation=cross, target_softmax=target_softmax,
                        overall_feature_similarity=overall, stream_feature_similarity=sims, stream_evidence=evidence,
                        stream_reliance=reliance, motion_reliance=motion, localisation=located, cost=spent.to_json(),
                        stream_margins=margins, motion_margins=motion_margins, global_factors=factors,
                        null_localisation=null, factor_probes=probes)


def _require_null_vis(null_pairs: Sequence[tuple[str, str]], null_vis: dict[str, SampleSet]) -> None:
    """KeyError naming the first class of ``null_pairs`` whose visualisations ``null_vis`` lacks."""
    missing = [c for _, c in null_pairs if c not in null_vis]
    if missing:
        raise KeyError(f"no visualisations of class {missing[0]!r} for the null pair with it")


def _null_scans(evaluator: PairEvaluator, classes: Sequence[str], null_pairs: Sequence[tuple[str, str]],
                own: dict[str, tuple[SampleSet, Evaluation]], null_vis: dict[str, SampleSet]) -> list[dict]:
    """The pair's occlusion scan (``_localise``) run on each null pair (x, c), reduced to what the null needs.
    Each other class is evaluated once however many null pairs hold it; a class ``null_vis`` lacks raises
    KeyError before any scan is spent."""
    _require_null_vis(null_pairs, null_vis)
    partners = {c: evaluator.evaluate(null_vis[c]) for c in dict.fromkeys(c for _, c in null_pairs)}
    out = []
    for x, c in null_pairs:
        vis_x, full_x = own[x]
        ix, ic = classes.index(x), classes.index(c)
        located = _localise(evaluator, vis_x, null_vis[c], full_x, partners[c], ix, ic, x, c)
        out.append({"a": x, "b": c, "streams": {
            name: {"peak_separation": loc.peak_separation if np.isfinite(loc.peak_separation) else None,
                   "peak_drop": loc.peak_drop, "whole_stream_drop": loc.whole_stream_drop}
            for name, loc in located.items()},
            "global_factors": _one_way_factor_swaps(evaluator, vis_x, null_vis[c], full_x.logits, ix, ic)})
    return out


def _null_swaps(evaluator: PairEvaluator, classes: Sequence[str], null_pairs: Sequence[tuple[str, str]],
                own: dict[str, tuple[SampleSet, Evaluation]], null_vis: dict[str, SampleSet]) -> list[dict]:
    """The global factors' one-way swap tests alone on each null pair (x, c), as null scans without a
    localisation (``"streams"`` empty): more draws of the null of the global flags, at one evaluation each. A class
    ``null_vis`` lacks raises KeyError before any swap is spent."""
    _require_null_vis(null_pairs, null_vis)
    out = []
    for x, c in null_pairs:
        vis_x, full_x = own[x]
        out.append({"a": x, "b": c, "streams": {}, "global_factors": _one_way_factor_swaps(
            evaluator, vis_x, null_vis[c], full_x.logits, classes.index(x), classes.index(c))})
    return out


def _one_way_factor_swaps(evaluator: PairEvaluator, own: SampleSet, partner: SampleSet, logits: np.ndarray,
                          target: int, other: int) -> dict[str, dict[str, dict]]:
    """stream -> global factor -> ``margin_change`` of ``own``'s class when its visualisations get ``partner``'s
    value of that factor (one batched evaluation): ``measure_global_factors`` in one direction, for the null of
    GLOBAL_APPEARANCE_CUE."""
    tests = global_factors.factor_tests(evaluator.specs)
    if not tests:
        return {}
    n = len(own[tests[0][0]])
    batch = {k: np.concatenate([v] * len(tests)) for k, v in own.items()}
    for i, (stream, factor) in enumerate(tests):
        batch[stream][i * n:(i + 1) * n] = global_factors.SWAPS[factor](own[stream], partner[stream])
    cut = evaluator.evaluate(batch).logits
    out: dict[str, dict[str, dict]] = {}
    for i, (stream, factor) in enumerate(tests):
        out.setdefault(stream, {})[factor] = margin_change(logits, cut[i * n:(i + 1) * n], target, other)
    return out


def _cross_activation(full_a: Evaluation, full_b: Evaluation, ia: int, ib: int, a: str, b: str,
                      base_feat: np.ndarray) -> tuple[dict[str, float], dict[str, float], float]:
    """How each class's visualisations read as the other; each class's lowest softmax on its own; how similar
    the two classes' features are (centred on the neutral input's)."""
    cross = {"a_on_b": float(_softmax(full_a.logits)[:, ib].mean()),
             "b_on_a": float(_softmax(full_b.logits)[:, ia].mean()),
             "a_on_b_logit_ratio": _logit_ratio(full_a.logits, ia, ib),
             "b_on_a_logit_ratio": _logit_ratio(full_b.logits, ib, ia)}
    target = {a: float(_softmax(full_a.logits)[:, ia].min()), b: float(_softmax(full_b.logits)[:, ib].min())}
    overall = scores.cosine_similarity(full_a.features.mean(0) - base_feat, full_b.features.mean(0) - base_feat)
    return cross, target, overall


def _stream_parts(evaluator: PairEvaluator, classes: Sequence[str], vis_a: SampleSet, vis_b: SampleSet,
                  full_a: Evaluation, full_b: Evaluation, ia: int, ib: int, base_logits: np.ndarray,
                  base_feat: np.ndarray) -> tuple[dict, dict, dict, dict]:
    """Per stream: feature similarity and each class's margin with that stream alone, over its partner and over
    every other class of the model (the same evaluations); each class's share of its logit lost without the
    stream."""
    a, b = classes[ia], classes[ib]
    names = [s.name for s in evaluator.specs]
    sims: dict[str, float] = {}
    evidence: dict[str, dict[str, float]] = {a: {}, b: {}}
    reliance: dict[str, dict[str, float]] = {a: {}, b: {}}
    margins: dict[str, dict[str, dict[str, float]]] = {a: {}, b: {}}
    for name in names:
        others = frozenset(n for n in names if n != name)
        ea, eb = ((evaluator.evaluate(vis_a, neutral=others), evaluator.evaluate(vis_b, neutral=others))
                  if others else (full_a, full_b))
        sims[name] = scores.cosine_similarity(ea.features.mean(0) - base_feat, eb.features.mean(0) - base_feat)
        evidence[a][name] = float((ea.logits[:, ia] - ea.logits[:, ib]).mean())
        evidence[b][name] = float((eb.logits[:, ib] - eb.logits[:, ia]).mean())
        for cls, idx, ev in ((a, ia, ea), (b, ib, eb)):
            margins[cls][name] = _margins_over_others(ev.logits, idx, classes)
        if others:
            without_a = evaluator.evaluate(vis_a, neutral=frozenset({name}))
            without_b = evaluator.evaluate(vis_b, neutral=frozenset({name}))
            reliance[a][name] = _relative_drop(full_a.logits[:, ia], without_a.logits[:, ia], base_logits[ia])
            reliance[b][name] = _relative_drop(full_b.logits[:, ib], without_b.logits[:, ib], base_logits[ib])
        else:
            reliance[a][name] = reliance[b][name] = 1.0
    return sims, evidence, reliance, margins


def _localise(evaluator: PairEvaluator, vis_a: SampleSet, vis_b: SampleSet, full_a: Evaluation, full_b: Evaluation,
              ia: int, ib: int, a: str, b: str) -> dict[str, Localisation]:
    """Attribute each class's margin over the other along the path from the partner's mean (one pass for all
    streams), then verify the best windows of each stream by swapping."""
    mean_a = {k: v.mean(axis=0) for k, v in vis_a.items()}
    mean_b = {k: v.mean(axis=0) for k, v in vis_b.items()}
    exhaustive = evaluator.config.localisation == "exhaustive"
    attr_a = None if exhaustive else evaluator.path_attribution(vis_a, mean_b, ia, ib)
    attr_b = None if exhaustive else evaluator.path_attribution(vis_b, mean_a, ib, ia)
    out = {}
    for k, spec in enumerate(evaluator.specs):
        directions = [(vis_a, full_a.logits, mean_b, ia, ib, a, attr_a[spec.name] if attr_a else None),
                      (vis_b, full_b.logits, mean_a, ib, ia, b, attr_b[spec.name] if attr_b else None)]
        out[spec.name] = localise_stream(evaluator, spec, directions, seed=k)
    return out


def margin_change(full: np.ndarray, cut: np.ndarray, target: int, other: int) -> dict[str, float]:
    """How a swap moved one class's margins (logit[target] - logit[k]): ``full`` and ``cut`` (S, K) are its
    visualisations' logits before and after. Returns ``margin`` (mean margin over ``other`` before), ``delta``
    (its mean loss), ``share`` (the mean per-sample share of it lost, clipped to [-1, 1]) and ``scale`` (the
    median over the model's other classes of the margin over them before: how far the class usually stands from
    the rest; None with no third class). Pure."""
    margin = full[:, target:target + 1] - full
    loss = margin - (cut[:, target:target + 1] - cut)
    rest = [k for k in range(full.shape[1]) if k not in (target, other)]
    share = np.clip(loss[:, other] / np.maximum(np.abs(margin[:, other]), 1e-6), -1.0, 1.0)
    return {"margin": float(margin[:, other].mean()), "delta": float(loss[:, other].mean()),
            "share": float(share.mean()),
            "scale": float(np.median(margin[:, rest].mean(axis=0))) if rest else None}


def measure_global_factors(evaluator: PairEvaluator, vis_a: SampleSet, vis_b: SampleSet, logits_a: np.ndarray,
                           logits_b: np.ndarray, ia: int, ib: int, a: str, b: str) -> dict[str, dict[str, dict]]:
    """The swap test of every global factor (``global_factors``) of every stream, in both directions: each class's
    visualisations with the partner's value of the factor. Per stream and factor: ``classes`` -> class ->
    ``margin_change`` of that class's margins, and ``holder``, the class holding more of the factor. One batched
    evaluation per direction."""
    tests = global_factors.factor_tests(evaluator.specs)
    if not tests:
        return {}
    out: dict[str, dict[str, dict]] = {}
    for own, partner, logits, target, other, name in ((vis_a, vis_b, logits_a, ia, ib, a),
                                                       (vis_b, vis_a, logits_b, ib, ia, b)):
        for stream, per_factor in _one_way_factor_swaps(evaluator, own, partner, logits, target, other).items():
            for factor, change in per_factor.items():
                entry = out.setdefault(stream, {}).setdefault(factor, {
                    "holder": global_factors.holder(vis_a[stream], vis_b[stream], factor, (a, b)), "classes": {}})
                entry["classes"][name] = change
    return out
