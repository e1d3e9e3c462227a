"""Where a batched step of the visualisation engine spends its time on a GPU (issue 2). Printed, never asserted.

For each model, at the engine's batch: the model alone (forward + input gradient with frozen weights, bf16 autocast,
channels_last; the ceiling no optimisation loop can pass), the whole engine step, the engine with its robustness
transforms off (no jitter, scaling or rotation), the engine on the pixel parameterisation, and both at one row
(what a step costs beyond the model when there is almost no arithmetic). Then the CUDA kernels of a few engine steps
by self time (torch.profiler), and how much of the steps' wall time the GPU was busy.

    python tests/benchmarks/engine_gpu_profile.py [--only vgg,r21] [--batch 64] [--steps 20]
``--device cpu --batch 2 --steps 1`` runs the same code on the CPU as a smoke test.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from engine_gpu import MODELS, synchronize  # the sibling script (this directory is first on sys.path)
from torch.profiler import ProfilerActivity, profile

from workers.engine import streams
from workers.engine.config import VisualizationConfig
from workers.engine.manifest import InputSpec
from workers.engine.optimise import to_channels_last
from workers.engine.visualize import UnitRequest, visualize

NO_TRANSFORMS = {"jitter_fraction": 0.0, "jitter_frames": 0, "scale_jitter": 0.0, "rotation_degrees": 0.0}


def model_alone(model: torch.nn.Module, specs: list[InputSpec], rows: int, iters: int, device: str) -> float:
    """Sample-iterations/s of the model's forward and input gradient alone, bf16 autocast, channels_last."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}
    xs = [streams.to_model_layout(torch.randn(rows, *streams.canonical_shape(s), device=device), s) for s in specs]
    xs = [x.contiguous(memory_format=fmt[x.dim()]).requires_grad_(True) for x in xs]
    targets = torch.arange(rows, device=device) % 10

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            out = model(*xs)
        torch.autograd.grad(out.gather(1, targets[:, None]).sum(), xs)

    step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return rows * iters / (time.perf_counter() - t0)


def engine_run(rows: int, steps: int, **overrides) -> tuple[VisualizationConfig, list[UnitRequest]]:
    """The config (bf16, channels_last, one chunk of ``rows``, with ``overrides``) and requests of an engine run."""
    # no retry pass (random weights leave most rows below softmax 0.5: they would run twice, counted once)
    config = VisualizationConfig(steps=steps, precision="bf16", chunk_size=rows, retry_below_probability=0.0,
                                 **overrides)
    return config, [UnitRequest(target=i % 10, kappa=1.0, seed=i) for i in range(rows)]


def engine(model: torch.nn.Module, specs: list[InputSpec], rows: int, steps: int, device: str,
           **overrides) -> float:
    """Sample-iterations/s of ``visualize`` (``engine_run``'s config and requests)."""
    config, reqs = engine_run(rows, steps, **overrides)
    visualize(model, specs, reqs, config.model_copy(update={"steps": 2}), device=device)
    synchronize(device)
    t0 = time.perf_counter()
    visualize(model, specs, reqs, config, device=device)
    synchronize(device)
    return rows * steps / (time.perf_counter() - t0)


def kernels(model: torch.nn.Module, specs: list[InputSpec], rows: int, steps: int, device: str, top: int) -> None:
    """The top kernels of ``steps`` engine steps by self device time, and the GPU's busy share of the wall time."""
    config, reqs = engine_run(rows, steps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        visualize(model, specs, reqs, config, device=device)
        synchronize(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=top, max_name_column_width=60), flush=True)
    if device == "cuda":
        busy = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e6
        print(f"{steps} steps: wall {wall:.3f} s (profiled), GPU busy {busy:.3f} s ({busy / wall:.0%})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="vgg,r21")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("engine_gpu_profile.py needs CUDA; nothing measured")
        return 1
    torch.backends.cudnn.benchmark = True
    for short in args.only.split(","):
        name, build, specs, _ = MODELS[short]
        model = build().to(args.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        to_channels_last(model)
        n, s, dev = args.batch, args.steps, args.device
        print(f"{name}, {n} rows, {s} steps (sample-iterations/s):", flush=True)
        print(f"  model alone              {model_alone(model, specs, n, s, dev):9.1f}", flush=True)
        print(f"  engine                   {engine(model, specs, n, s, dev):9.1f}", flush=True)
        print(f"  engine, no transforms    {engine(model, specs, n, s, dev, **NO_TRANSFORMS):9.1f}", flush=True)
        print(f"  engine, pixel            {engine(model, specs, n, s, dev, parameterization='pixel'):9.1f}",
              flush=True)
        print(f"  model alone, 1 row       {model_alone(model, specs, 1, s, dev):9.1f}", flush=True)
        print(f"  engine, 1 row            {engine(model, specs, 1, s, dev):9.1f}", flush=True)
        kernels(model, specs, n, args.profile_steps, dev, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
