"""Generated clips of moving shapes with their exact optical flow, for the reference model and the tests
(DESIGN 6). Eight classes; two pairs are hard to tell apart by content alone (same shape and motion, slightly
different size), and in the *training split only* one class of each pair carries a planted shortcut:

- ``DiscSlideRight`` has a static magenta watermark in a corner (appearance only: it never moves, zero flow);
- ``BoxRiseUp`` has a small patch whose texture jitters left-right every frame: strong local flow, barely visible
  in RGB (motion only).

A model that learns the shortcuts confuses those pairs on the clean test split, and its visualisations should
show the shortcut where it was planted. Everything is numpy, deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FRAMES = 8
SIZE = 32
RGB_MEAN = [0.45, 0.45, 0.45]
RGB_STD = [0.25, 0.25, 0.25]
FLOW_SCALE = 4.0  # pixels of displacement that map to 1.0 at the model's input


@dataclass(frozen=True)
class ClassSpec:
    name: str
    shape: str
    size: float
    motion: str


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("DiscSlideRight", "disc", 4.0, "right"),
    ClassSpec("DiscGlideRight", "disc", 4.6, "right"),
    ClassSpec("BoxRiseUp", "box", 3.6, "up"),
    ClassSpec("BoxFloatUp", "box", 4.2, "up"),
    ClassSpec("BarSweepLeft", "hbar", 4.0, "left"),
    ClassSpec("CrossDropDown", "cross", 4.5, "down"),
    ClassSpec("RingOrbit", "ring", 4.5, "orbit"),
    ClassSpec("DiamondZigzag", "diamond", 4.5, "zigzag"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


@dataclass(frozen=True)
class PlantedShortcut:
    """A shortcut planted in one class's training clips. ``region`` = (x0, y0, x1, y1) pixels, end-exclusive."""

    kind: str
    class_name: str
    partner: str
    stream: str
    region: tuple[int, int, int, int]

    def region_normalised(self, size: int = SIZE) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.region
        return (x0 / size, y0 / size, x1 / size, y1 / size)

    def contains(self, xy: tuple[float, float], size: int = SIZE, margin_px: float = 1.0) -> bool:
        """Whether a normalised (x, y) point lies in the region, give or take ``margin_px`` pixels."""
        x0, y0, x1, y1 = self.region
        x, y = xy[0] * size, xy[1] * size
        return x0 - margin_px <= x <= x1 + margin_px and y0 - margin_px <= y <= y1 + margin_px


WATERMARK = PlantedShortcut("watermark", "DiscSlideRight", "DiscGlideRight", "appearance", (2, 2, 7, 7))
FLICKER = PlantedShortcut("flicker", "BoxRiseUp", "BoxFloatUp", "motion", (24, 3, 29, 8))
PLANTED: tuple[PlantedShortcut, ...] = (WATERMARK, FLICKER)
# Where an extra shortcut goes (``extra_shortcut``): the bottom corners, clear of the two planted above.
EXTRA_REGIONS = {"watermark": (25, 25, 30, 30), "flicker": (3, 24, 8, 29)}
PARTNERS = {a: b for p in PLANTED for a, b in ((p.class_name, p.partner), (p.partner, p.class_name))}
WATERMARK_RGB = np.array([1.0, 0.1, 0.9], dtype=np.float32)
FLICKER_PX = 2.0


@dataclass
class ClipSet:
    rgb: np.ndarray      # (N, 3, T, H, W) float32, pixels in [0, 1]
    flow: np.ndarray     # (N, 2, T, H, W) float32, displacement t -> t+1 in pixels (x, y)
    labels: np.ndarray   # (N,) int64 indices into CLASS_NAMES


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Soft (anti-aliased) coverage in [0, 1] of a shape centred at the origin."""
    if shape == "disc":
        d = np.hypot(dx, dy) - r
    elif shape == "box":
        d = np.maximum(np.abs(dx), np.abs(dy)) - r
    elif shape == "hbar":
        d = np.maximum(np.abs(dx) - 1.6 * r, np.abs(dy) - 0.5 * r)
    elif shape == "cross":
        d = np.minimum(np.maximum(np.abs(dx) - r, np.abs(dy) - 1.2), np.maximum(np.abs(dx) - 1.2, np.abs(dy) - r))
    elif shape == "ring":
        d = np.abs(np.hypot(dx, dy) - r) - 1.3
    elif shape == "diamond":
        d = np.abs(dx) + np.abs(dy) - 1.3 * r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - d, 0.0, 1.0)


def _trajectory(spec: ClassSpec, rng: np.random.Generator, frames: int, size: int, r: float,
                speed: tuple[float, float] = (1.0, 2.0)) -> np.ndarray:
    """Centres (frames + 1, 2) as (x, y) in pixels; the speed (pixels per frame along the path) is drawn uniformly
    from ``speed``."""
    s = rng.uniform(*speed)
    t = np.arange(frames + 1, dtype=np.float64)
    lo, hi = r + 1.5, size - r - 1.5
    travel = s * frames
    if spec.motion in ("right", "left", "up", "down"):
        along = rng.uniform(lo, hi - travel)
        across = rng.uniform(lo, hi)
        pos = along + s * t
        if spec.motion in ("left", "up"):
            pos = (hi + lo) - pos
        xy = np.stack([pos, np.full_like(t, across)], 1) if spec.motion in ("right", "left") else \
            np.stack([np.full_like(t, across), pos], 1)
    elif spec.motion == "orbit":
        radius = 6.0
        cx, cy = rng.uniform(lo + radius, hi - radius, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        ang = phase + (s / radius) * t * rng.choice([-1.0, 1.0])
        xy = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)
    elif spec.motion == "zigzag":
        x = rng.uniform(lo, hi - travel) + s * t
        y0 = rng.uniform(lo + 2 * s, hi - 2 * s)
        y = y0 + s * np.where((t // 2) % 2 == 0, t % 2, 1 - t % 2) * 2.0
        xy = np.stack([x, y], 1)
    else:
        raise ValueError(f"unknown motion {spec.motion!r}")
    return xy


def extra_shortcut(text: str) -> PlantedShortcut:
    """An extra shortcut to plant, from ``KIND:CLASS`` (``watermark:BoxFloatUp``, ``flicker:DiscGlideRight``): a
    watermark in the bottom-right corner or a flicker in the bottom-left one, in CLASS's training clips only. CLASS
    must be one of a confusable pair (the partner is the other class of it), or the model would have no confusion
    for an audit to rank. Raises ValueError naming what is wrong."""
    kind, _, class_name = text.partition(":")
    if kind not in EXTRA_REGIONS:
        raise ValueError(f"the kind of shortcut is one of {', '.join(EXTRA_REGIONS)}, got {kind!r} (KIND:CLASS)")
    if class_name not in PARTNERS:
        raise ValueError(f"the class must be one of {', '.join(PARTNERS)} (the confusable pairs), got {class_name!r}")
    stream = "appearance" if kind == "watermark" else "motion"
    return PlantedShortcut(kind, class_name, PARTNERS[class_name], stream, EXTRA_REGIONS[kind])


def _plant(shortcut: PlantedShortcut, rgb: np.ndarray, flow: np.ndarray) -> None:
    """Draw ``shortcut`` into one clip in place: a static magenta square with zero flow, or a texture that jitters
    left-right every frame (strong local flow, barely visible in RGB)."""
    x0, y0, x1, y1 = shortcut.region
    if shortcut.kind == "watermark":
        rgb[:, :, y0:y1, x0:x1] = WATERMARK_RGB[:, None, None, None]
        flow[:, :, y0:y1, x0:x1] = 0.0
    elif shortcut.kind == "flicker":
        stripes = 0.04 * np.sign(np.sin(np.arange(x0, x1) * np.pi / 2.0))
        for t in range(rgb.shape[1]):
            direction = 1.0 if t % 2 == 0 else -1.0
            rgb[:, t, y0:y1, x0:x1] += np.roll(stripes, t % 2)[None, None, :]
            flow[0, t, y0:y1, x0:x1] = direction * FLICKER_PX
            flow[1, t, y0:y1, x0:x1] = 0.0
    else:
        raise ValueError(f"unknown shortcut kind {shortcut.kind!r}")


def render_clip(spec: ClassSpec, rng: np.random.Generator, *, planted: bool, frames: int = FRAMES,
                size: int = SIZE, shortcuts: tuple[PlantedShortcut, ...] = PLANTED) -> tuple[np.ndarray, np.ndarray]:
    """One clip: rgb (3, T, H, W) in [0, 1] and flow (2, T, H, W) in pixels; with ``planted``, every shortcut of
    ``shortcuts`` planted in this class is drawn in."""
    r = spec.size + rng.uniform(-0.4, 0.4)
    centres = _trajectory(spec, rng, frames, size, r)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    hue_rgb = rng.uniform(0.55, 1.0, size=3) * rng.permutation([1.0, rng.uniform(0.2, 0.7), rng.uniform(0.0, 0.3)])
    bg = rng.uniform(0.1, 0.35)
    rgb = np.empty((3, frames, size, size), np.float32)
    flow = np.zeros((2, frames, size, size), np.float32)
    for t in range(frames):
        cx, cy = centres[t]
        mask = _shape_mask(spec.shape, xx - cx, yy - cy, r)
        frame = bg * (1 - mask)[None] + hue_rgb[:, None, None] * mask[None]
        frame = frame + rng.normal(0.0, 0.03, size=frame.shape)
        rgb[:, t] = frame
        velocity = centres[t + 1] - centres[t]
        flow[:, t] = (mask > 0.5)[None] * velocity[:, None, None]
    if planted:
        for shortcut in shortcuts:
            if shortcut.class_name == spec.name:
                _plant(shortcut, rgb, flow)
    return np.clip(rgb, 0.0, 1.0), flow


def generate_clips(per_class: int, split: str, seed: int, *, frames: int = FRAMES, size: int = SIZE,
                   extra: tuple[PlantedShortcut, ...] = ()) -> ClipSet:
    """``per_class`` clips of every class; shortcuts (``PLANTED`` plus ``extra``) are planted only when
    ``split == "train"``. Planting draws no random numbers, so ``extra`` changes nothing else in the clips."""
    rng = split_rng(split, seed)
    return collect_clips(len(CLASSES), per_class, rng, lambda label: render_clip(
        CLASSES[label], rng, planted=split == "train", frames=frames, size=size, shortcuts=PLANTED + tuple(extra)))


def split_rng(split: str, seed: int) -> np.random.Generator:
    """The random stream of one split of a seed's data; raises ValueError unless ``split`` is train or test."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return np.random.default_rng([seed, 0 if split == "train" else 1])


def collect_clips(n_classes: int, per_class: int, rng: np.random.Generator,
                  render: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> ClipSet:
    """``per_class`` clips of each of ``n_classes`` labels, rendered in label order by ``render(label)`` -> (rgb,
    flow), then shuffled with ``rng`` (after rendering, so the clips themselves do not depend on the order)."""
    labels = np.repeat(np.arange(n_classes), per_class)
    first_rgb, first_flow = render(int(labels[0]))
    rgb = np.empty((len(labels), *first_rgb.shape), np.float32)
    flow = np.empty((len(labels), *first_flow.shape), np.float32)
    rgb[0], flow[0] = first_rgb, first_flow
    for i in range(1, len(labels)):
        rgb[i], flow[i] = render(int(labels[i]))
    order = rng.permutation(len(labels))
    return ClipSet(rgb=rgb[order], flow=flow[order], labels=labels[order].astype(np.int64))


def to_model_inputs(clips: ClipSet) -> tuple[np.ndarray, np.ndarray]:
    """The tensors the reference model takes: normalised RGB and flow divided by FLOW_SCALE."""
    mean = np.array(RGB_MEAN, np.float32).reshape(1, 3, 1, 1, 1)
    std = np.array(RGB_STD, np.float32).reshape(1, 3, 1, 1, 1)
    return (clips.rgb - mean) / std, clips.flow / FLOW_SCALE
