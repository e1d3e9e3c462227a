"""The one optimisation loop: gradient ascent on the inputs of a frozen model, many objectives as rows of one
batch, one forward and one backward per step for all of them (DESIGN 4.2).

Rows are independent: each has its own seed for its initial noise and its jitter draws. The model runs in
channels_last(_3d) memory format (on CUDA; on the CPU for one-frame NCHW models only) and on CUDA under bf16
autocast; regularisers and the parameters stay in fp32.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from workers.engine import cost
from workers.engine import streams as streams_mod
from workers.engine.config import VisualizationConfig
from workers.engine.manifest import InputSpec
from workers.engine.objectives import Objective, ObjectiveContext, capture_activations
from workers.engine.parameterization import parameterize
from workers.engine.transforms import (
    affine_matrices,
    affine_rows,
    draw_affine_table,
    draw_jitter_table,
    is_identity,
    roll_rows,
)

log = logging.getLogger(__name__)


@dataclass
class OptimisationResult:
    """Outputs of one batch of rows (all on the CPU)."""

    inputs: dict[str, torch.Tensor]   # stream -> model-space canonical (N, C, T, H, W), float32
    unit: torch.Tensor                # (N,) final value of the unit (un-jittered input)
    penalty: torch.Tensor             # (N,) final value of the penalty
    logits: torch.Tensor              # (N, K) final logits (un-jittered input), float32
    history: torch.Tensor             # (S, N) unit value every ``record_every`` steps (jittered input)
    seconds: float


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients for the block; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def uses_bf16(config: VisualizationConfig, device: torch.device) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")


def _memory_format(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    if not enabled:
        return x
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def to_channels_last(model: nn.Module) -> None:
    """channels_last for 4-D weights, channels_last_3d for 5-D ones, in place (``Module.to`` handles one rank)."""
    for p in model.parameters():
        if p.dim() in (4, 5):
            p.data = _memory_format(p.data, True)


def initial_inputs(specs: Sequence[InputSpec], seeds: Sequence[int], init_scale: float) -> dict[str, torch.Tensor]:
    """Unit-space white noise (N, C, T, H, W) per stream; row n drawn from its own generator seeded by seeds[n].
    Rows are drawn on up to ``torch.get_num_threads()`` threads (one generator each, so the numbers do not depend on
    the threads): drawing is sequential per generator, and 64 rows of a 224-px two-stream net (VGG-16 RGB + 10 flow
    frames) took 0.53 s on one core of the 2-core CPU machine, 0.33 s on both; a GPU host has more cores to draw
    on while its GPU waits (docs/engine_gpu.md)."""
    def draw(spec_seed: tuple[int, InputSpec, int]) -> torch.Tensor:
        k, spec, seed = spec_seed
        return torch.randn(streams_mod.canonical_shape(spec), generator=torch.Generator().manual_seed(seed * 1000 + k))

    jobs = [(k, spec, int(s)) for k, spec in enumerate(specs) for s in seeds]
    workers = min(torch.get_num_threads(), len(jobs))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            drawn = list(pool.map(draw, jobs))
    else:
        drawn = [draw(job) for job in jobs]
    n = len(seeds)
    return {spec.name: torch.stack(drawn[k * n:(k + 1) * n]) * init_scale for k, spec in enumerate(specs)}


def forward_model(model: nn.Module, specs: Sequence[InputSpec], unit_inputs: dict[str, torch.Tensor], *,
                  bf16: bool, channels_last: bool) -> torch.Tensor:
    """Logits (N, K) of the model on unit-space canonical inputs."""
    xs = []
    for spec in specs:
        x = streams_mod.to_model_layout(streams_mod.unit_to_model_space(unit_inputs[spec.name], spec), spec)
        xs.append(_memory_format(x, channels_last))
    device_type = xs[0].device.type
    cost.record(len(xs[0]), gradient=torch.is_grad_enabled())
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16):
        return model(*xs)


def optimise(model: nn.Module, specs: Sequence[InputSpec], unit: Objective, penalty: Objective, seeds: Sequence[int],
             config: VisualizationConfig, *, device: torch.device | str | None = None,
             init: dict[str, torch.Tensor] | None = None,
             on_step: Callable[[int], None] | None = None) -> OptimisationResult:
    """Maximise ``unit`` minus ``penalty`` for ``len(seeds)`` rows; ``init`` (unit space) overrides the noise start.

    Each stream is represented by ``config.parameterization`` (pixels, or a 1/f-scaled spatial spectrum per frame:
    ``parameterization``); the model sees it through the robustness transforms (per-row jitter, scale and
    rotation), the objectives and regularisers see it untransformed. The data term's gradient with respect to
    the unit-space input is normalised per row to a mean magnitude of 1 per input element over all streams
    (DeepDream-style gradient normalisation), and each penalty (a mean over elements) enters with its per-element
    derivative; that combined unit-space ascent direction is then carried back to the parameterisation's
    variables. The balance between a unit and its regularisers then no longer depends on the model's logit scale,
    which differs by orders of magnitude between models and grows during the ascent, nor on the
    parameterisation, so the same weights carry over between models. The normalisation is shared by the streams,
    so their relative sensitivity is kept (normalising each stream on its own was tried and did not change what
    the reference model's visualisations show)."""
    dev = resolve_device(device)
    bf16 = uses_bf16(config, dev)
    # on the CPU only for 2-D convnets: EfficientNet-Lite0's depthwise convolutions ran about 1.4x faster batched;
    # the 3-D reference net gained nothing
    channels_last = config.channels_last and (dev.type == "cuda" or all(s.layout == "NCHW" for s in specs))
    n = len(seeds)
    start = init if init is not None else initial_inputs(specs, seeds, config.init_scale)
    by_name = {spec.name: spec for spec in specs}
    params = {name: parameterize(config.parameterization, t.detach().to(dev, torch.float32), by_name[name],
                                 decay=config.fourier_decay, decorrelate=config.decorrelate_colour)
              for name, t in start.items()}
    vectors = {spec.name: spec.modality == "flow" for spec in specs}
    max_px = max(int(round(config.jitter_fraction * min(s.height, s.width))) for s in specs)
    max_frames = config.jitter_frames if max(s.num_frames for s in specs) > 1 else 0
    # the draws stay on the host too, for what the loop decides from them: on a GPU, reading a device tensor to
    # decide waits for every kernel queued before it, and the GPU then idles while the next ones are queued
    host_table = torch.stack([draw_jitter_table(s, config.steps, max_px, max_frames) for s in seeds])  # (N, S, 3)
    table = host_table.to(dev)
    moved = host_table.ne(0).any(dim=0).tolist()  # (S, 3): whether any row shifts along t, y, x at that step
    scale_jitter, rotation_degrees = config.affine_ranges(streams_mod.shortest_side(specs))
    host_affine = torch.stack([draw_affine_table(s, config.steps, scale_jitter, rotation_degrees)
                               for s in seeds])  # (N, S, 2)
    affine = host_affine.to(dev)
    identity = [is_identity(affine_matrices(host_affine[:, k, 0], host_affine[:, k, 1])) for k in range(config.steps)]
    opt = torch.optim.Adam([{"params": p.variables, "lr": config.learning_rate(p.kind)} for p in params.values()])
    names = list(params)
    sizes = {k: math.prod(start[k].shape[1:]) for k in names}
    history = []
    t0 = time.perf_counter()
    with frozen(model):
        model.to(dev)
        if channels_last:
            to_channels_last(model)
        runner = torch.compile(model) if config.compile else model
        with capture_activations(model, unit.layers) as acts:
            for step in range(config.steps):
                opt.zero_grad(set_to_none=True)
                mapped = {k: p.unit() for k, p in params.items()}
                # the model's graph and the parameterisation's are kept apart: the ascent is formed in unit space
                inputs = {k: v.detach().requires_grad_(True) for k, v in mapped.items()}
                mats = affine_matrices(affine[:, step, 0], affine[:, step, 1])
                shown = {k: affine_rows(roll_rows(v, table[:, step], moved[step]), mats, vectors=vectors[k],
                                        identity=identity[step])
                         for k, v in inputs.items()}
                logits = forward_model(runner, specs, shown, bf16=bf16, channels_last=channels_last)
                value = unit(ObjectiveContext(inputs=inputs, logits=logits, activations=acts))
                grads = torch.autograd.grad(value.sum(), [inputs[k] for k in names])
                pen = penalty(ObjectiveContext(inputs=inputs, logits=logits, activations=acts))
                pen_grads = (torch.autograd.grad(pen.sum(), [inputs[k] for k in names], allow_unused=True)
                             if pen.requires_grad else [None] * len(names))
                gain = sum(g.abs().flatten(1).sum(1) for g in grads) / sum(sizes.values())  # (N,) mean |dunit/du|
                inv_gain = (1.0 / gain.clamp_min(1e-12)).view(n, 1, 1, 1, 1)
                ascent = [g * inv_gain - (pg * sizes[k] if pg is not None else 0.0)
                          for k, g, pg in zip(names, grads, pen_grads)]
                torch.autograd.backward([mapped[k] for k in names], [-a for a in ascent])
                opt.step()
                if step % config.record_every == 0 or step == config.steps - 1:
                    history.append(value.detach().float())  # to the host once, at the end
                if on_step is not None:
                    on_step(step)
            with torch.no_grad():
                final_inputs = {k: p.unit().detach() for k, p in params.items()}
                logits = forward_model(runner, specs, final_inputs, bf16=bf16, channels_last=channels_last)
                ctx = ObjectiveContext(inputs=final_inputs, logits=logits, activations=acts)
                final = unit(ctx)
                final_pen = penalty(ctx)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    model_space = {
        spec.name: streams_mod.unit_to_model_space(final_inputs[spec.name], spec).float().cpu() for spec in specs
    }
    log.debug("optimised %d rows x %d steps in %.2fs", n, config.steps, seconds)
    return OptimisationResult(inputs=model_space, unit=final.float().cpu(), penalty=final_pen.float().cpu(),
                              logits=logits.detach().float().cpu(), history=torch.stack(history).cpu(),
                              seconds=seconds)
