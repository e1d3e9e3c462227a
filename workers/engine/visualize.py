"""Class- and unit-level visualisation: turns a list of requests (unit, kappa, seed) into regularised objectives,
runs them through ``optimise`` in chunks sized to the memory budget, and returns one result per request carrying
the exact config and seed that made it."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from workers.engine import objectives as obj
from workers.engine import streams as streams_mod
from workers.engine.config import LARGE_FRAME_MIN_SIDE, VisualizationConfig
from workers.engine.cpu_memory import keep_freed_blocks_in_heap
from workers.engine.errors import InvalidInput
from workers.engine.manifest import InputSpec
from workers.engine.optimise import initial_inputs, optimise, resolve_device
from workers.engine.parameterization import resolve_kind

log = logging.getLogger(__name__)

CPU_CHUNK = 64
CPU_CHUNK_LARGE_FRAMES = 8
"""Rows per chunk on the CPU for frames of ``LARGE_FRAME_MIN_SIDE`` pixels and more. EfficientNet-Lite0 at 224 px on
the 2-core CPU: its forward and backward alone ran 27-29 sample-iterations/s at 4-8 rows and 21 at 16 (the larger
batch's activations leave the cache and exceed the allocator's 32 MiB heap limit, ``cpu_memory``); the whole engine,
3 paired runs each, 22.7 at 4 rows, 23.8 at 8 and 22.3 at 16 (runs vary by +-15%). Small frames keep ``CPU_CHUNK``:
there a chunk's results would otherwise change in their last bits (the batch a row shares changes the order of
float additions)."""


@dataclass(frozen=True)
class UnitRequest:
    """One objective: maximise class logit ``target`` (or channel ``target`` of ``layer``) under temporal weight
    ``kappa``, starting from the noise of ``seed``; a class logit also against the classes ``partners``."""

    target: int
    kappa: float
    seed: int
    layer: str | None = None
    partners: tuple[int, ...] = ()     # classes the target is set apart from (``VisualizationConfig.partner_contrast``)


@dataclass
class UnitResult:
    request: UnitRequest
    inputs: dict[str, np.ndarray]      # stream -> model-space canonical (C, T, H, W) float32
    unit_value: float                  # final objective value (contrast logit, or channel mean), un-jittered input
    logit: float | None                # final logit of the target class (class objectives only)
    penalty: float                     # final value of the regularisers (weighted sum)
    probability: float | None          # softmax of the target class (class objectives only)
    history: list[float]
    config: dict = field(default_factory=dict)


def regulariser_penalty(specs: Sequence[InputSpec], kappas: torch.Tensor,
                        config: VisualizationConfig) -> obj.Objective:
    """Sum over streams of (w_lp R_alpha + w_tv R_S + kappa w_t R_T), kappa per row (N,). Terms whose weight is 0
    are left out (not computed at every step for nothing); with none left it is the zero objective."""
    total = obj.zero()
    for spec in specs:
        w = config.weights(spec.modality, resolve_kind(config.parameterization, spec))
        if w.lp_weight:
            total = total + w.lp_weight * obj.lp_penalty(spec.name, config.alpha)
        if w.tv_weight:
            total = total + w.tv_weight * obj.spatial_tv_penalty(spec.name, config.beta)
        if spec.num_frames > 1 and w.temporal_weight:
            total = total + (kappas * w.temporal_weight) * obj.temporal_penalty(spec.name)
    return total


def unit_objective(requests: Sequence[UnitRequest], contrast: float = 0.0,
                   partner_contrast: float = 0.0) -> obj.Objective:
    layers = {r.layer for r in requests}
    if len(layers) != 1:
        raise InvalidInput("requests in one call must all target the same layer (or all class logits)", field="layer")
    layer = layers.pop()
    targets = [r.target for r in requests]
    if layer is not None:
        return obj.channel(layer, targets)
    return obj.class_logit(targets, contrast, [r.partners for r in requests], partner_contrast)


def estimate_chunk_size(model: nn.Module, specs: Sequence[InputSpec], config: VisualizationConfig,
                        device: torch.device) -> int:
    """Rows per chunk: ``config.chunk_size`` if set; 64 on the CPU; on CUDA, from the peak memory of a two-row
    probe step and the free memory times ``memory_budget_fraction``."""
    if config.chunk_size:
        return config.chunk_size
    if device.type != "cuda":
        large = streams_mod.shortest_side(specs) >= LARGE_FRAME_MIN_SIDE
        return CPU_CHUNK_LARGE_FRAMES if large else CPU_CHUNK
    probe = config.model_copy(update={"steps": 1, "compile": False})
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    rows = 2
    requests = [UnitRequest(target=0, kappa=1.0, seed=i) for i in range(rows)]
    optimise(model, specs, unit_objective(requests), regulariser_penalty(specs, torch.ones(rows), probe),
             [r.seed for r in requests], probe, device=device)
    per_row = max((torch.cuda.max_memory_allocated(device) - base) / rows, 1)
    free, _ = torch.cuda.mem_get_info(device)
    size = int(free * config.memory_budget_fraction // per_row)
    log.info("chunk size %d rows (%.1f MiB per row, %.1f GiB free)", size, per_row / 2**20, free / 2**30)
    return max(1, min(size, 4096))


def visualize(model: nn.Module, specs: Sequence[InputSpec], requests: Sequence[UnitRequest],
              config: VisualizationConfig | None = None, *, device: torch.device | str | None = None,
              num_classes: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[UnitResult]:
    """Optimise every request; rows are batched in chunks. ``progress(done_rows, total_rows)`` after each chunk."""
    config = config or VisualizationConfig()
    if not requests:
        return []
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_blocks_in_heap()
    if num_classes is not None:
        bad = [c for r in requests if r.layer is None for c in (r.target, *r.partners) if not 0 <= c < num_classes]
        if bad:
            raise InvalidInput(f"class index {bad[0]} is outside 0..{num_classes - 1}", field="classes")
    chunk = estimate_chunk_size(model, specs, config, dev)
    results = _optimise_rows(model, specs, list(requests), config, dev, chunk, progress)
    retry = [i for i, r in enumerate(results) if r.probability is not None
             and r.probability < config.retry_below_probability and config.contrast < config.retry_contrast]
    if retry:
        # A class whose evidence is largely shared with another can end classified as that other class (its
        # partner's logit grows faster); those rows are run again on the full log-odds, and the better result kept.
        log.info("%d of %d class visualisations below softmax %.2f: retrying at contrast %.2f", len(retry),
                 len(results), config.retry_below_probability, config.retry_contrast)
        again = _optimise_rows(model, specs, [requests[i] for i in retry],
                               config.model_copy(update={"contrast": config.retry_contrast}), dev, chunk, None)
        for i, result in zip(retry, again):
            if result.probability > results[i].probability:
                results[i] = result
    return results


def _optimise_rows(model: nn.Module, specs: Sequence[InputSpec], requests: list[UnitRequest],
                   config: VisualizationConfig, dev: torch.device, chunk: int,
                   progress: Callable[[int, int], None] | None) -> list[UnitResult]:
    results: list[UnitResult] = []
    recorded = config.model_dump()
    for start in range(0, len(requests), chunk):
        part = list(requests[start:start + chunk])
        kappas = torch.tensor([r.kappa for r in part], dtype=torch.float32, device=dev)
        unit = unit_objective(part, config.contrast, config.partner_contrast)
        seeds = [r.seed for r in part]
        out = optimise(model, specs, unit, regulariser_penalty(specs, kappas, config), seeds, config,
                       device=dev, init=initial_inputs(specs, seeds, config.init_scale))
        probs = out.logits.softmax(dim=1)
        for i, req in enumerate(part):
            results.append(UnitResult(
                request=req,
                inputs={name: t[i].numpy() for name, t in out.inputs.items()},
                unit_value=float(out.unit[i]),
                logit=float(out.logits[i, req.target]) if req.layer is None else None,
                penalty=float(out.penalty[i]),
                probability=float(probs[i, req.target]) if req.layer is None else None,
                history=[float(v) for v in out.history[:, i]],
                config={**recorded, "seed": req.seed, "kappa": req.kappa, "target": req.target, "layer": req.layer,
                        "partners": list(req.partners)},
            ))
        if progress is not None:
            progress(len(results), len(requests))
    return results
