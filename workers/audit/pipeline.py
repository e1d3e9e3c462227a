"""The steps of an audit as plain functions (DESIGN 1): plan -> visualise (chunks of objectives) -> analyse each
pair -> render artifacts -> build the report JSON (DESIGN 3.4). The Celery tasks call these one step at a time;
``run_local_audit`` calls them all in-process.

Units of work are keyed by what they compute: an ``ObjectiveKey`` (class, kappa level, seed) for a
visualisation, a pair (a, b) for an analysis, so that re-running a step gives the same result.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from workers.audit.analysis import AuditLeanings, PairScores, combine_pair_scores, share_baselines, with_audit_baseline
from workers.audit.confusion import ConfusionMatrix
from workers.audit.evidence import PROBE_OTHER_CLASSES, EvidenceConfig, PairEvidence, measure_pair_evidence
from workers.audit.factor_probes import LeverCache
from workers.audit.flag_rates import code_rate, load_flag_rates
from workers.audit.flags import Flag, derive_flags, flag_fingerprint
from workers.audit.options import AuditOptions
from workers.audit.ranking import (
    RankedPair,
    audit_null_pairs,
    audited_partners,
    factor_null_pairs,
    select_audit_pairs,
)
from workers.engine import render
from workers.engine.bundle import LoadedModel
from workers.engine.cost import count_evaluations
from workers.engine.errors import ModelOutputError
from workers.engine.manifest import Manifest
from workers.engine.visualize import UnitRequest, visualize

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class ObjectiveKey:
    class_name: str
    level: int
    seed: int


@dataclass
class Visualization:
    key: ObjectiveKey
    kappa: float
    tensors: dict[str, np.ndarray]     # stream -> model-space canonical (C, T, H, W)
    logit: float
    probability: float
    config: dict = field(default_factory=dict)


@dataclass
class AuditPlan:
    pairs: list[RankedPair]
    keys: list[ObjectiveKey]

    @property
    def classes(self) -> list[str]:
        return sorted({k.class_name for k in self.keys})

    @property
    def partners(self) -> dict[str, list[str]]:
        return audited_partners([(p.a, p.b) for p in self.pairs])


@dataclass
class PairResult:
    pair: RankedPair
    scores: PairScores
    flags: list[Flag]
    cost: dict[str, int] = field(default_factory=dict)     # the model evaluations its evidence took (``cost``)


def plan_audit(manifest: Manifest, confusion: ConfusionMatrix, options: AuditOptions,
               pairs: Sequence[RankedPair] | None = None) -> AuditPlan:
    """The ranked pairs (DESIGN 3.3) plus explicit ones -- or ``pairs`` when they were ranked already (the API
    stores them with the audit) -- and one objective per class x level x seed."""
    if pairs is None:
        pairs = select_audit_pairs(confusion, top_k=options.top_k, min_support=options.min_support,
                                   min_rate=options.min_rate, explicit=[tuple(p) for p in options.pairs])
    pairs = list(pairs)
    classes = [c for c in manifest.classes if any(c in (p.a, p.b) for p in pairs)]
    keys = [ObjectiveKey(c, level, seed) for c in classes for level in range(options.levels)
            for seed in range(options.seeds)]
    return AuditPlan(pairs=pairs, keys=keys)


def visualise(model: LoadedModel, keys: Sequence[ObjectiveKey], options: AuditOptions, *,
              partners: Mapping[str, Sequence[str]] | None = None, device: torch.device | str | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[Visualization]:
    """Optimise the objectives ``keys`` as rows of one batched run (chunked by the engine); a class with
    ``partners`` (``audited_partners``: the classes it is audited with) is also set apart from them
    (``VisualizationConfig.partner_contrast``)."""
    config = options.engine_config()
    kappas = config.kappa_levels
    classes = model.manifest.classes
    partners = partners or {}
    requests = [UnitRequest(target=classes.index(k.class_name), kappa=kappas[k.level], seed=k.seed,
                            partners=tuple(classes.index(c) for c in partners.get(k.class_name, ())))
                for k in keys]
    results = visualize(model.module, model.manifest.inputs, requests, config, device=device,
                        num_classes=len(classes), progress=progress)
    for k, r in zip(keys, results):
        values = [float(r.logit), float(r.probability)]
        if not all(np.isfinite(values)) or not all(np.isfinite(np.asarray(t)).all() for t in r.inputs.values()):
            raise ModelOutputError(
                f"the model returned NaN or infinite values while visualising class {k.class_name!r} (level "
                f"{k.level}, seed {k.seed}): logit {values[0]}, probability {values[1]}; check the model for "
                "operations undefined on some inputs (log, sqrt, division)", field="model")
    return [Visualization(key=k, kappa=r.request.kappa, tensors=r.inputs, logit=r.logit,
                          probability=float(r.probability), config=r.config) for k, r in zip(keys, results)]


def sample_set(visualizations: Sequence[Visualization], class_name: str) -> tuple[dict[str, np.ndarray], list[int]]:
    """A class's visualisations stacked per stream (S, C, T, H, W), in key order, and each sample's level."""
    own = sorted((v for v in visualizations if v.key.class_name == class_name), key=lambda v: v.key)
    if not own:
        raise KeyError(f"no visualisations of class {class_name!r}")
    streams = own[0].tensors.keys()
    return {s: np.stack([v.tensors[s] for v in own]) for s in streams}, [v.key.level for v in own]


def _ranked_names(pairs: Sequence[RankedPair]) -> list[tuple[str, str]]:
    """The audit's pairs as (a, b) in rank order: the order both null plans below are drawn in. Pure."""
    return [(p.a, p.b) for p in sorted(pairs, key=lambda p: p.rank)]


def pair_null_pairs(pairs: Sequence[RankedPair], pair: RankedPair, options: AuditOptions,
                    config: EvidenceConfig | None = None) -> list[tuple[str, str]]:
    """The null pairs ``pair``'s evidence scans among the audit's ``pairs`` (``ranking.audit_null_pairs``: none when
    the audit is too small for ``LOCALIZED_CUE`` to use them). Pure."""
    names = _ranked_names(pairs)
    plan = audit_null_pairs(names, (config or EvidenceConfig()).null_partners,
                            options.thresholds.localized_null_min_scans)
    return plan[names.index((pair.a, pair.b))]


def pair_swap_null_pairs(pairs: Sequence[RankedPair], pair: RankedPair, scans: Sequence[tuple[str, str]]
                         ) -> list[tuple[str, str]]:
    """The null pairs ``pair``'s evidence gives only the global factors' swap tests (``ranking.factor_null_pairs``),
    those ``scans`` (``pair_null_pairs``) do not already hold. Pure."""
    names = _ranked_names(pairs)
    return [p for p in factor_null_pairs(names, names.index((pair.a, pair.b))) if p not in scans]


def evidence_config(options: AuditOptions) -> EvidenceConfig:
    """What the audit's options ask of the model evidence: the factor probes or not."""
    return EvidenceConfig(probe_other_classes=PROBE_OTHER_CLASSES if options.factor_probes else 0)


def measure_pair(model: LoadedModel, pair: RankedPair, visualizations: Sequence[Visualization], *,
                 device: torch.device | str | None = None, config: EvidenceConfig | None = None,
                 nulls: Sequence[tuple[str, str]] = (), swap_nulls: Sequence[tuple[str, str]] = (),
                 probe_cache: LeverCache | None = None) -> PairEvidence:
    """Every model evaluation of one pair (runs where the model is loaded: the GPU worker), with the scans of
    its null pairs ``nulls`` (``pair_null_pairs``) and the swap tests alone on ``swap_nulls``
    (``pair_swap_null_pairs``), whose classes' visualisations must be among ``visualizations``; ``probe_cache``
    holds the factor-probe levers earlier pairs of the audit measured."""
    vis_a, _ = sample_set(visualizations, pair.a)
    vis_b, _ = sample_set(visualizations, pair.b)
    null_vis = {c: sample_set(visualizations, c)[0] for _, c in [*nulls, *swap_nulls]}
    return measure_pair_evidence(model.module, model.manifest.inputs, model.manifest.classes, pair.a, pair.b,
                                 vis_a, vis_b, device=device, config=config, null_pairs=nulls, null_vis=null_vis,
                                 swap_null_pairs=swap_nulls, probe_cache=probe_cache)


def judge_pair(manifest: Manifest, pair: RankedPair, evidence: PairEvidence, visualizations: Sequence[Visualization],
               options: AuditOptions, leanings: AuditLeanings | None = None) -> PairResult:
    """Scores (DESIGN 4.4) and flags of one pair from its model evidence and its visualisations: pure maths.
    ``leanings`` (``audit_leanings`` of every pair of the audit) gives the one-stream flags the audit's other
    classes, and ``GLOBAL_APPEARANCE_CUE`` the audit's other pairs, to compare with."""
    vis_a, levels_a = sample_set(visualizations, pair.a)
    vis_b, levels_b = sample_set(visualizations, pair.b)
    s = combine_pair_scores(evidence, manifest.inputs, vis_a, vis_b, levels_a=levels_a, levels_b=levels_b)
    s = with_audit_baseline(s, leanings)
    return PairResult(pair=pair, scores=s, flags=derive_flags(s, manifest.inputs, options.thresholds),
                      cost=evidence.cost)


def audit_leanings(evidence: Sequence[PairEvidence]) -> AuditLeanings:
    """What every class of an audit leans on, from the model evidence of all its pairs. Pure."""
    return AuditLeanings.gather([share_baselines(e) for e in evidence])


def analyse_pairs(model: LoadedModel, pairs: Sequence[RankedPair], visualizations: Sequence[Visualization],
                  options: AuditOptions, *, device: torch.device | str | None = None,
                  config: EvidenceConfig | None = None,
                  progress: Callable[[float], None] | None = None) -> list[PairResult]:
    """``measure_pair`` for every pair, then ``judge_pair`` for each against the whole audit's leanings, in one
    process. ``progress`` gets the fraction of pairs measured; ``config`` defaults to ``evidence_config(options)``.
    The pairs share the factor probes' levers (``factor_probes.LeverCache``): on a model of few classes they are
    measured once."""
    config = config or evidence_config(options)
    evidence = []
    probe_cache: LeverCache = {}
    for i, pair in enumerate(pairs):
        nulls = pair_null_pairs(pairs, pair, options, config)
        evidence.append(measure_pair(model, pair, visualizations, device=device, config=config, nulls=nulls,
                                     swap_nulls=pair_swap_null_pairs(pairs, pair, nulls), probe_cache=probe_cache))
        if progress:
            progress((i + 1) / len(pairs))
    leanings = audit_leanings(evidence)
    return [judge_pair(model.manifest, pair, e, visualizations, options, leanings) for pair, e in zip(pairs, evidence)]


def render_class_artifacts(manifest: Manifest, visualizations: Sequence[Visualization], out_dir: Path,
                           seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """Clips, strips and tensors of seed ``seed`` of every class x stream x level, written under ``out_dir``;
    returns class -> stream -> [{level, kappa, seed, gif, mp4, png, npy}] with paths relative to ``out_dir``.
    Flow clips of all classes share one colour scale, so that a pair's two classes can be compared."""
    out: dict[str, dict[str, list[dict]]] = {}
    chosen = sorted((v for v in visualizations if v.key.seed == seed), key=lambda v: v.key)
    flow_max = {spec.name: max((render.flow_max_magnitude(v.tensors[spec.name], spec) for v in chosen), default=0.0)
                for spec in manifest.inputs if spec.modality == "flow"}
    for v in chosen:
        for spec in manifest.inputs:
            files = render.render_visualization(v.tensors[spec.name], spec, out_dir / "clips",
                                                f"{v.key.class_name}__{spec.name}__k{v.key.level}__s{v.key.seed}",
                                                flow_max=flow_max.get(spec.name))
            entry = {"level": v.key.level, "kappa": v.kappa, "seed": v.key.seed,
                     **{fmt: str(p.relative_to(out_dir)) for fmt, p in files.items()}}
            out.setdefault(v.key.class_name, {}).setdefault(spec.name, []).append(entry)
    return out


def render_pair_artifacts(manifest: Manifest, result: PairResult, visualizations: Sequence[Visualization],
                          out_dir: Path) -> dict[str, dict[str, str]]:
    """Difference map (npy + png over class a's first frame) per stream; paths relative to ``out_dir``."""
    out = {}
    first = min((v for v in visualizations if v.key.class_name == result.pair.a), key=lambda v: v.key)
    for spec in manifest.inputs:
        st = result.scores.streams[spec.name]
        background = render.display_frames(first.tensors[spec.name], spec)[0]
        files = render.render_difference_map(st.difference_map, out_dir / "pairs",
                                             f"{result.pair.a}__{result.pair.b}__{spec.name}",
                                             background=background, peak_xy=st.difference_peak_xy)
        out[spec.name] = {fmt: str(p.relative_to(out_dir)) for fmt, p in files.items()}
    return out


def pair_entry(result: PairResult, clips: dict, difference: dict) -> dict:
    """One pair of the report JSON (DESIGN 3.4)."""
    p = result.pair
    return {
        "a": p.a, "b": p.b, "rank": p.rank, "explicit": p.explicit,
        "confusion": p.confusion_json(),
        "scores": result.scores.to_json(),
        "flags": [{**f.to_json(), "fingerprint": flag_fingerprint(p.a, p.b, f.code, f.stream, f.class_name),
                   "benchmark": code_rate(f.code, load_flag_rates())}
                  for f in result.flags],
        "artifacts": {"clips": {c: clips.get(c, {}) for c in (p.a, p.b)}, "difference": difference},
    }


def streams_and_levels(manifest: Manifest, options: AuditOptions) -> dict:
    """The ``streams`` and ``levels`` (temporal-regularisation strengths) an audit renders, as stored in its plan
    and shown in its report."""
    return {"streams": [{"name": s.name, "modality": s.modality} for s in manifest.inputs],
            "levels": [{"index": i, "kappa": k} for i, k in enumerate(options.engine_config().kappa_levels)]}


def build_report(*, audit: dict, manifest: Manifest, confusion: ConfusionMatrix, options: AuditOptions,
                 pairs: list[dict]) -> dict:
    """The report JSON of DESIGN 3.4: ``{"audit": {...}, "pairs": [...]}`` with pairs in rank order."""
    return {
        "audit": {
            **audit,
            "model": {**audit.get("model", {}), "name": manifest.name, "version": manifest.version},
            "options": options.model_dump(mode="json"),
            "classes": list(manifest.classes),
            "confusion": {"classes": list(confusion.classes), "matrix": confusion.counts.tolist()},
            **streams_and_levels(manifest, options),
        },
        "pairs": sorted(pairs, key=lambda p: p["rank"]),
    }


def run_local_audit(model: LoadedModel, confusion: ConfusionMatrix, options: AuditOptions, out_dir: Path, *,
                    audit_id: str = "local", device: torch.device | str | None = None,
                    progress: Callable[[str, float], None] | None = None) -> dict:
    """A whole audit in this process: returns the report dict and writes artifacts under ``out_dir``. Its
    ``timings`` hold seconds per stage and, under ``cost``, the model evaluations each stage made."""
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    plan = plan_audit(model.manifest, confusion, options)
    log.info("audit %s: %d pairs, %d objectives", audit_id, len(plan.pairs), len(plan.keys))
    with count_evaluations() as visualise_cost:
        visualizations = visualise(model, plan.keys, options, partners=plan.partners, device=device,
                                   progress=(lambda d, n: progress("visualise", d / n)) if progress else None)
    timings["visualise_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    with count_evaluations() as analyse_cost:
        results = analyse_pairs(model, plan.pairs, visualizations, options, device=device,
                                progress=(lambda done: progress("analyse", done)) if progress else None)
    timings["analyse_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    clips = render_class_artifacts(model.manifest, visualizations, out_dir)
    entries = [pair_entry(r, clips, render_pair_artifacts(model.manifest, r, visualizations, out_dir))
               for r in results]
    timings["render_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    timings["cost"] = {"visualise": visualise_cost.to_json(), "analyse": analyse_cost.to_json()}
    min_prob = min(v.probability for v in visualizations)
    return build_report(audit={"id": audit_id, "status": "done", "timings": timings,
                               "model": {"sha256": model.sha256}, "min_target_probability": min_prob},
                        manifest=model.manifest, confusion=confusion, options=options, pairs=entries)
