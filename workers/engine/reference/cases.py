"""Randomised planted-shortcut cases (issue 11): this module owns the case generator -- a class set, cue designs, an
architecture and a seed (a ``CaseSpec``) -- and ``build_case``, which renders the clips, trains the model, measures
its clean test-split confusion and caches the result (safetensors + JSON) with its ground truth.

A case has 7-9 classes in groups of the same shape and motion (shapes and motions differ between groups):

- 2 or 3 *cue pairs*: two classes whose sizes differ by 0.6 px (each clip jitters the size by +-0.4 px), so content
  alone barely tells them apart; one cue is planted on one class of the pair (the cue's ``class_name``; the other
  is its ``partner``) in the TRAIN split only. The test split is always clean, so a model that learnt the cue reads
  the cue class's test clips as its partner.
- 2 *clean control pairs*, built the same way without any cue: a clean triple (sizes r, r+0.6, r+1.2; pairs
  (1, 2) and (2, 3)) or two clean pairs. Their confusion is honest (size ambiguity). A case needs at least 7
  classes: two cue pairs plus two clean pairs cannot share a class without a cue touching a clean pair.

Cue families (``Cue.family``), each planted on a different cue pair of a case; ``stream`` names the manifest input
that carries the cue (``appearance`` for static, ``motion`` for motion cues on two-stream nets, ``clip`` for every
cue of the single-stream ``c3d_single``); ``region`` = (x0, y0, x1, y1) pixels, end-exclusive, for local cues:

==============  ======  =====================================================================================
family          local   what is drawn into the cue class's train clips
==============  ======  =====================================================================================
logo            yes     a static glyph (``design``) in ``colour`` at opacity ``amplitude``; zero flow on it
colour_cast     no      whole frame tinted by ``amplitude`` x ``colour`` (an RGB direction)
border          no      letterbox / pillarbox bars or a frame border of ``amplitude`` px in ``colour``; zero flow
background      no      a static textured scene behind the shape (``design``: blobs or a grating of ``period`` px)
flicker         yes     a patch whose stripe texture jitters every frame by ``amplitude`` px (horizontally or
                        vertically, ``design``): RGB barely changes (+-0.04), flow is +-amplitude in the patch
shake           no      camera shake: every frame translated by an offset (``design`` jitter: i.i.d. per frame
                        in +-amplitude px on both axes; sway: a horizontal sine of ``amplitude`` px and ``period``
                        frames); flow = the camera's displacement at every pixel, plus the shape's own motion
speed           no      the shape moves ``amplitude`` times faster (speed range scaled) than its partner
blink           yes     a patch brightened by ``amplitude`` x ``colour`` in "on" frames, on for ``period`` / 2
                        frames then off as long. Flow (defined here, there is no displacement): (0, +2) px in the
                        patch between t and t+1 when it switches on, (0, -2) when it switches off, 0 otherwise --
                        the patch is treated as a shutter wiping in and out, so the flow input carries the blink
==============  ======  =====================================================================================

Splits (``case_specs``): ``calibration`` seeds are 10000 + i, ``heldout`` seeds 20000 + i (i < 10000, disjoint),
and the held-out split draws every cue from designs the calibration split never uses:

==============  ===================================================  =================================================
family          calibration                                          heldout
==============  ===================================================  =================================================
logo            glyphs bars/checker/corner, side 4-5 px, opacity 1,  glyphs plus/diagonal/ring, side 3 or 6 px,
                in a frame corner (1-2 px from two edges)            opacity 0.7-0.85, interior (>= 6 px from edges)
colour_cast     amplitude 0.08-0.12                                  amplitude 0.05-0.07
border          letterbox (top + bottom bars), 2-3 px, near black    pillarbox (left + right) or a 1-2 px frame
                                                                     border, saturated colour
background      2-3 Gaussian blobs, contrast 0.15-0.25               a sine grating of period 5-8 px, contrast 0.10-0.15
flicker         horizontal, 1.5-2.5 px, side 4-5 px, corner          vertical, 2.5-3.5 px, side 3 or 6 px, interior
shake           jitter, +-1.0-1.5 px                                 sway, 2.0-2.5 px, period 3-4 frames
speed           x1.6-1.9                                             x2.0-2.2
blink           period 2 (on/off every frame), +0.10-0.15, side 4-5  period 4, +0.16-0.22, side 3 or 6 px, interior
                px, corner
==============  ===================================================  =================================================

Colours (logo, colour_cast, border in heldout, background, blink) are saturated HSV colours with hue in
[0.02, 0.48] for calibration and [0.52, 0.98] for heldout. Families are dealt out so that each split uses every
family about equally often on each architecture (in 20 cases: every family 6-7 times, on every architecture at
least once); architectures rotate ``twostream_flatten``, ``twostream_gap``, ``c3d_single`` by case index.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import confusion_matrix
from torch import nn

from workers.engine.architectures import build_architecture
from workers.engine.files import atomic_path, write_bytes_atomic
from workers.engine.manifest import Manifest
from workers.engine.reference import data
from workers.engine.reference.train import fit_classifier, predict_labels

log = logging.getLogger(__name__)

GENERATOR_VERSION = "planted-cases-v1"
FRAMES = data.FRAMES
SIZE = data.SIZE
SHAPES = ("disc", "box", "hbar", "cross", "ring", "diamond")
MOTIONS = ("right", "left", "up", "down", "orbit", "zigzag")
STATIC_FAMILIES = ("logo", "colour_cast", "border", "background")
MOTION_FAMILIES = ("flicker", "shake", "speed", "blink")
FAMILIES = STATIC_FAMILIES + MOTION_FAMILIES
LOCAL_FAMILIES = ("logo", "flicker", "blink")
ARCHITECTURES = ("twostream_flatten", "twostream_gap", "c3d_single")
POSITION_KEEPING = ("twostream_flatten", "c3d_single")
SPLITS = ("calibration", "heldout")
SEED_BASE = {"calibration": 10_000, "heldout": 20_000}
MAX_CASES = 10_000
SIZE_STEP = 0.6              # px between the radii of a group's classes (each clip jitters by +-0.4)
BASE_SPEED = (0.7, 1.1)      # px per frame along the path, every class
BLINK_FLOW_PX = 2.0
FLICKER_RGB = 0.04
DEFAULT_CACHE = Path.home() / ".cache" / "quirkscope" / "planted_cases"


@dataclass(frozen=True)
class CaseClass:
    """One class of a case: a shape moving along a path; ``size`` is the mean radius in px."""

    name: str
    shape: str
    motion: str
    size: float


@dataclass(frozen=True)
class Cue:
    """A shortcut planted in ``class_name``'s train clips (never its test clips) of a case whose partner is
    ``partner``. What ``design``, ``colour``, ``amplitude``, ``period`` and ``pattern_seed`` mean depends on the
    family (module docstring). ``stream`` is the manifest input that carries it."""

    family: str
    class_name: str
    partner: str
    stream: str
    region: tuple[int, int, int, int] | None
    design: str
    colour: tuple[float, float, float]
    amplitude: float
    period: int = 2
    pattern_seed: int = 0

    @property
    def local(self) -> bool:
        return self.region is not None

    @property
    def kind(self) -> str:
        """``static`` or ``motion``."""
        return "static" if self.family in STATIC_FAMILIES else "motion"

    def region_normalised(self) -> tuple[float, float, float, float] | None:
        if self.region is None:
            return None
        x0, y0, x1, y1 = self.region
        return (x0 / SIZE, y0 / SIZE, x1 / SIZE, y1 / SIZE)

    def to_json(self) -> dict:
        """The fields plus ``local`` and ``kind`` (read-only: ``from_json`` ignores them)."""
        return {**asdict(self), "local": self.local, "kind": self.kind}

    @staticmethod
    def from_json(raw: dict) -> "Cue":
        fields = {k: v for k, v in raw.items() if k not in ("local", "kind")}
        return Cue(**{**fields, "region": tuple(raw["region"]) if raw["region"] is not None else None,
                      "colour": tuple(raw["colour"])})


@dataclass(frozen=True)
class CaseSpec:
    """Everything that determines a case: with the generator version, its hash keys the cache."""

    case_id: str
    split: str
    seed: int
    architecture: str
    classes: tuple[CaseClass, ...]
    cues: tuple[Cue, ...]
    clean_pairs: tuple[tuple[str, str], ...]
    per_class_train: int = 160     # 160 x 9 classes x 15 epochs: 26-31 s on one CPU thread (measured)
    per_class_test: int = 40
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def planted_pairs(self) -> list[tuple[str, str]]:
        return [(c.class_name, c.partner) for c in self.cues]

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(raw: dict) -> "CaseSpec":
        return CaseSpec(**{**raw, "classes": tuple(CaseClass(**c) for c in raw["classes"]),
                           "cues": tuple(Cue.from_json(c) for c in raw["cues"]),
                           "clean_pairs": tuple(tuple(p) for p in raw["clean_pairs"])})

    def key(self) -> str:
        """24 hex digits of a SHA-256 over the generator version and the spec."""
        text = json.dumps({"version": GENERATOR_VERSION, "spec": self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class TrainedCase:
    spec: CaseSpec
    module: nn.Module             # eval mode
    manifest: Manifest
    confusion: dict               # {"classes": [...], "matrix": [[...]]}, rows = true class (clean test split)
    test_accuracy: float
    seconds: float                # training (data + fit + test) when it was built
    from_cache: bool = False

    @property
    def cues(self) -> tuple[Cue, ...]:
        return self.spec.cues

    @property
    def clean_pairs(self) -> tuple[tuple[str, str], ...]:
        return self.spec.clean_pairs

    def rate(self, true: str, predicted: str) -> float:
        """Share of ``true``'s test clips predicted as ``predicted``."""
        return directed_rate(self.confusion, true, predicted)

    def planted_confusion(self) -> dict[str, float]:
        """Per cue: the share of its class's clean test clips read as its partner."""
        return {f"{c.class_name}>{c.partner}": self.rate(c.class_name, c.partner) for c in self.cues}

    def clean_confusion(self) -> dict[str, float]:
        """Per clean pair: the larger of its two directed confusion rates."""
        return {f"{a}~{b}": max(self.rate(a, b), self.rate(b, a)) for a, b in self.clean_pairs}

    def cue_learned(self, cue: Cue) -> bool:
        """The model learnt the cue: its class's clean test clips read as the partner more often than the partner's
        read as it, and more often than any clean pair of the case is confused (either way)."""
        rate = self.rate(cue.class_name, cue.partner)
        return rate > self.rate(cue.partner, cue.class_name) and rate > max(self.clean_confusion().values())


def directed_rate(confusion: dict, true: str, predicted: str) -> float:
    """C[true, predicted] / row sum of ``true`` in a {"classes", "matrix"} confusion. Pure."""
    i, j = confusion["classes"].index(true), confusion["classes"].index(predicted)
    row = confusion["matrix"][i]
    return row[j] / max(sum(row), 1)


# ---------------------------------------------------------------- designs


def _colour(rng: np.random.Generator, split: str) -> tuple[float, float, float]:
    lo = 0.0 if split == "calibration" else 0.5
    rgb = colorsys.hsv_to_rgb(rng.uniform(lo + 0.02, lo + 0.48), rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.0))
    return tuple(round(float(v), 4) for v in rgb)


def _patch_region(rng: np.random.Generator, split: str, sides: Sequence[int]) -> tuple[int, int, int, int]:
    """A square patch: calibration in a frame corner (1-2 px from two edges), heldout in the interior."""
    side = int(rng.choice(sides))
    if split == "calibration":
        margin_x, margin_y = rng.integers(1, 3, size=2)
        x0 = int(margin_x) if rng.random() < 0.5 else SIZE - int(margin_x) - side
        y0 = int(margin_y) if rng.random() < 0.5 else SIZE - int(margin_y) - side
    else:
        x0, y0 = (int(v) for v in rng.integers(6, SIZE - 6 - side + 1, size=2))
    return (x0, y0, x0 + side, y0 + side)


def draw_cue(family: str, class_name: str, partner: str, stream: str, split: str,
             rng: np.random.Generator) -> Cue:
    """One cue of ``family`` with its design drawn from ``split``'s ranges (module docstring)."""
    cal = split == "calibration"
    base = {"family": family, "class_name": class_name, "partner": partner, "stream": stream}
    local_sides = (4, 5) if cal else (3, 6)
    if family == "logo":
        glyph = str(rng.choice(CALIBRATION_GLYPHS if cal else HELDOUT_GLYPHS))
        return Cue(**base, region=_patch_region(rng, split, local_sides), design=glyph, colour=_colour(rng, split),
                   amplitude=1.0 if cal else round(float(rng.uniform(0.7, 0.85)), 3))
    if family == "colour_cast":
        return Cue(**base, region=None, design="tint", colour=_colour(rng, split),
                   amplitude=round(float(rng.uniform(0.08, 0.12) if cal else rng.uniform(0.05, 0.07)), 3))
    if family == "border":
        if cal:
            grey = float(rng.uniform(0.0, 0.05))
            return Cue(**base, region=None, design="letterbox", colour=(grey, grey, grey),
                       amplitude=float(rng.integers(2, 4)))
        return Cue(**base, region=None, design=str(rng.choice(["pillarbox", "frame"])), colour=_colour(rng, split),
                   amplitude=float(rng.integers(1, 3)))
    if family == "background":
        if cal:
            return Cue(**base, region=None, design="blobs", colour=_colour(rng, split),
                       amplitude=round(float(rng.uniform(0.15, 0.25)), 3), period=int(rng.integers(2, 4)),
                       pattern_seed=int(rng.integers(2**31)))
        return Cue(**base, region=None, design="grating", colour=_colour(rng, split),
                   amplitude=round(float(rng.uniform(0.10, 0.15)), 3), period=int(rng.integers(5, 9)),
                   pattern_seed=int(rng.integers(2**31)))
    if family == "flicker":
        return Cue(**base, region=_patch_region(rng, split, local_sides), design="horizontal" if cal else "vertical",
                   colour=(1.0, 1.0, 1.0),
                   amplitude=round(float(rng.uniform(1.5, 2.5) if cal else rng.uniform(2.5, 3.5)), 3))
    if family == "shake":
        if cal:
            return Cue(**base, region=None, design="jitter", colour=(0.0, 0.0, 0.0),
                       amplitude=round(float(rng.uniform(1.0, 1.5)), 3))
        return Cue(**base, region=None, design="sway", colour=(0.0, 0.0, 0.0),
                   amplitude=round(float(rng.uniform(2.0, 2.5)), 3), period=int(rng.integers(3, 5)))
    if family == "speed":
        return Cue(**base, region=None, design="faster", colour=(0.0, 0.0, 0.0),
                   amplitude=round(float(rng.uniform(1.6, 1.9) if cal else rng.uniform(2.0, 2.2)), 3))
    if family == "blink":
        return Cue(**base, region=_patch_region(rng, split, local_sides), design="brighten",
                   colour=_colour(rng, split),
                   amplitude=round(float(rng.uniform(0.10, 0.15) if cal else rng.uniform(0.16, 0.22)), 3),
                   period=2 if cal else 4)
    raise ValueError(f"unknown cue family {family!r}")


CALIBRATION_GLYPHS = ("bars", "checker", "corner")
HELDOUT_GLYPHS = ("plus", "diagonal", "ring")


def glyph_mask(glyph: str, side: int) -> np.ndarray:
    """(side, side) bool: the pixels of a logo glyph."""
    i, j = np.mgrid[0:side, 0:side]
    mid = (side - 1) / 2
    if glyph == "bars":
        return i % 2 == 0
    if glyph == "checker":
        return (i + j) % 2 == 0
    if glyph == "corner":
        return (j == 0) | (i == side - 1) | (j == 1) | (i == side - 2)
    if glyph == "plus":
        return (np.abs(i - mid) < 1) | (np.abs(j - mid) < 1)
    if glyph == "diagonal":
        return np.abs(i - j) <= (side > 4)
    if glyph == "ring":
        d = np.hypot(i - mid, j - mid)
        return np.abs(d - mid) < 0.75 if side > 3 else d > 0.5
    raise ValueError(f"unknown glyph {glyph!r}")


def background_pattern(cue: Cue, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """The static scene of a ``background`` cue at pixel centres (xx, yy): (H, W) in [0, 1]."""
    rng = np.random.default_rng(cue.pattern_seed)
    if cue.design == "blobs":
        out = np.zeros_like(xx)
        for _ in range(cue.period):
            cx, cy = rng.uniform(0, SIZE, size=2)
            sigma = rng.uniform(4.0, 8.0)
            out = np.maximum(out, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)))
        return out
    if cue.design == "grating":
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / cue.period + phase)
    raise ValueError(f"unknown background design {cue.design!r}")


def camera_offsets(cue: Cue, rng: np.random.Generator, frames: int = FRAMES) -> np.ndarray:
    """(frames + 1, 2) camera translation (x, y) in px of a ``shake`` cue for one clip."""
    if cue.design == "jitter":
        return rng.uniform(-cue.amplitude, cue.amplitude, size=(frames + 1, 2))
    if cue.design == "sway":
        t = np.arange(frames + 1)
        x = cue.amplitude * np.sin(2 * np.pi * t / cue.period + rng.uniform(0, 2 * np.pi))
        return np.stack([x, np.zeros_like(x)], 1)
    raise ValueError(f"unknown shake design {cue.design!r}")


def blink_states(cue: Cue, frames: int = FRAMES) -> np.ndarray:
    """(frames + 1,) bool: whether a ``blink`` cue is on in each frame (on for period / 2 frames, then off)."""
    half = max(cue.period // 2, 1)
    return (np.arange(frames + 1) // half) % 2 == 0


# ---------------------------------------------------------------- rendering


def render_case_clip(cls: CaseClass, rng: np.random.Generator, cues: Sequence[Cue] = (),
                     cue_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One clip of ``cls``: rgb (3, T, H, W) in [0, 1] and flow (2, T, H, W) in px, with ``cues`` (those of this
    class) drawn in. ``rng`` draws the same numbers whatever ``cues`` holds, so a clip with and without its cues
    differs by the cues alone; ``cue_rng`` draws a cue's per-clip randomness (shake offsets)."""
    own = [c for c in cues if c.class_name == cls.name]
    by_family = {c.family: c for c in own}
    speed = BASE_SPEED
    if "speed" in by_family:
        speed = tuple(v * by_family["speed"].amplitude for v in BASE_SPEED)
    r = cls.size + rng.uniform(-0.4, 0.4)
    centres = data._trajectory(data.ClassSpec(cls.name, cls.shape, cls.size, cls.motion), rng, FRAMES, SIZE, r,
                               speed=speed)
    hue_rgb = rng.uniform(0.55, 1.0, size=3) * rng.permutation([1.0, rng.uniform(0.2, 0.7), rng.uniform(0.0, 0.3)])
    bg = rng.uniform(0.1, 0.35)
    offsets = np.zeros((FRAMES + 1, 2))
    if "shake" in by_family:
        offsets = camera_offsets(by_family["shake"], cue_rng or np.random.default_rng(0))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    rgb = np.empty((3, FRAMES, SIZE, SIZE), np.float32)
    flow = np.zeros((2, FRAMES, SIZE, SIZE), np.float32)
    for t in range(FRAMES):
        ox, oy = offsets[t]
        scene = np.full((3, SIZE, SIZE), bg)
        if "background" in by_family:
            cue = by_family["background"]
            scene = scene + cue.amplitude * np.asarray(cue.colour)[:, None, None] * \
                background_pattern(cue, xx - ox, yy - oy)[None]
        cx, cy = centres[t] + offsets[t]
        mask = data._shape_mask(cls.shape, xx - cx, yy - cy, r)
        frame = scene * (1 - mask)[None] + hue_rgb[:, None, None] * mask[None]
        rgb[:, t] = frame + rng.normal(0.0, 0.03, size=frame.shape)
        camera = offsets[t + 1] - offsets[t]
        flow[:, t] = camera[:, None, None] + (mask > 0.5)[None] * (centres[t + 1] - centres[t])[:, None, None]
    for family in ("colour_cast", "border", "logo", "flicker", "blink"):
        if family in by_family:
            OVERLAYS[family](by_family[family], rgb, flow)
    return np.clip(rgb, 0.0, 1.0), flow



def _overlay_colour_cast(cue: Cue, rgb: np.ndarray, flow: np.ndarray) -> None:
    rgb += cue.amplitude * np.asarray(cue.colour, np.float32)[:, None, None, None]


def _overlay_border(cue: Cue, rgb: np.ndarray, flow: np.ndarray) -> None:
    mask = border_mask(cue)
    rgb[:, :, mask] = np.asarray(cue.colour, np.float32)[:, None, None]
    flow[:, :, mask] = 0.0


def border_mask(cue: Cue) -> np.ndarray:
    """(H, W) bool: the pixels a ``border`` cue covers."""
    b = int(cue.amplitude)
    mask = np.zeros((SIZE, SIZE), bool)
    if cue.design in ("letterbox", "frame"):
        mask[:b], mask[-b:] = True, True
    if cue.design in ("pillarbox", "frame"):
        mask[:, :b], mask[:, -b:] = True, True
    if not mask.any():
        raise ValueError(f"unknown border design {cue.design!r}")
    return mask


def _overlay_logo(cue: Cue, rgb: np.ndarray, flow: np.ndarray) -> None:
    x0, y0, x1, y1 = cue.region
    glyph = glyph_mask(cue.design, x1 - x0)
    patch = rgb[:, :, y0:y1, x0:x1]
    colour = np.asarray(cue.colour, np.float32)[:, None, None, None]
    rgb[:, :, y0:y1, x0:x1] = np.where(glyph, (1 - cue.amplitude) * patch + cue.amplitude * colour, patch)
    flow[:, :, y0:y1, x0:x1] = np.where(glyph, 0.0, flow[:, :, y0:y1, x0:x1])


def _overlay_flicker(cue: Cue, rgb: np.ndarray, flow: np.ndarray) -> None:
    x0, y0, x1, y1 = cue.region
    axis = 0 if cue.design == "horizontal" else 1
    coords = np.arange(x0, x1) if axis == 0 else np.arange(y0, y1)
    stripes = FLICKER_RGB * np.sign(np.sin(coords * np.pi / 2.0))
    for t in range(rgb.shape[1]):
        shifted = np.roll(stripes, t % 2)
        rgb[:, t, y0:y1, x0:x1] += shifted[None, None, :] if axis == 0 else shifted[None, :, None]
        flow[:, t, y0:y1, x0:x1] = 0.0
        flow[axis, t, y0:y1, x0:x1] = (1.0 if t % 2 == 0 else -1.0) * cue.amplitude


def _overlay_blink(cue: Cue, rgb: np.ndarray, flow: np.ndarray) -> None:
    x0, y0, x1, y1 = cue.region
    on = blink_states(cue, rgb.shape[1])
    colour = np.asarray(cue.colour, np.float32)[:, None, None]
    for t in range(rgb.shape[1]):
        if on[t]:
            rgb[:, t, y0:y1, x0:x1] += cue.amplitude * colour
        flow[:, t, y0:y1, x0:x1] = 0.0
        if on[t + 1] != on[t]:
            flow[1, t, y0:y1, x0:x1] = BLINK_FLOW_PX if on[t + 1] else -BLINK_FLOW_PX


OVERLAYS = {"colour_cast": _overlay_colour_cast, "border": _overlay_border, "logo": _overlay_logo,
            "flicker": _overlay_flicker, "blink": _overlay_blink}


def generate_case_clips(spec: CaseSpec, split: str, per_class: int) -> data.ClipSet:
    """``per_class`` clips of every class of ``spec``; cues are drawn in only when ``split == "train"``. Labels
    index ``spec.class_names``."""
    rng = data.split_rng(split, spec.seed)
    cue_rng = np.random.default_rng([spec.seed, 2])
    cues = spec.cues if split == "train" else ()
    return data.collect_clips(len(spec.classes), per_class, rng,
                              lambda label: render_case_clip(spec.classes[label], rng, cues, cue_rng))


# ---------------------------------------------------------------- specs


def _stream_of(family: str, architecture: str) -> str:
    if architecture == "c3d_single":
        return "clip"
    return "appearance" if family in STATIC_FAMILIES else "motion"


def _class_groups(rng: np.random.Generator, n_cues: int) -> list[list[CaseClass]]:
    """Groups of classes (same shape and motion within a group, all different between groups): ``n_cues`` pairs
    for the cues first, then the clean groups (a triple, or two pairs)."""
    clean_sizes = [3] if n_cues == 3 or rng.random() < 0.5 else [2, 2]
    sizes = [2] * n_cues + clean_sizes
    shapes = rng.permutation(SHAPES)[:len(sizes)]
    motions = rng.permutation(MOTIONS)[:len(sizes)]
    groups = []
    for shape, motion, count in zip(shapes, motions, sizes):
        r0 = round(float(rng.uniform(3.4, 4.0)), 2)
        stem = f"{shape.capitalize()}{motion.capitalize()}"
        groups.append([CaseClass(f"{stem}{k + 1}", str(shape), str(motion), round(r0 + k * SIZE_STEP, 2))
                       for k in range(count)])
    return groups


def _deal_families(counts: Counter, architecture: str, n: int, rng: np.random.Generator) -> list[str]:
    """The ``n`` families least used so far on ``architecture``, then overall (ties broken at random), counted into
    ``counts`` (keys: family and (family, architecture))."""
    order = sorted(FAMILIES, key=lambda f: (counts[f, architecture], counts[f], rng.random()))
    chosen = order[:n]
    for f in chosen:
        counts[f] += 1
        counts[f, architecture] += 1
    return chosen


def case_specs(split: str, count: int) -> list[CaseSpec]:
    """The first ``count`` cases of ``split`` (``calibration`` or ``heldout``); deterministic, and a longer list
    starts with the shorter one. See the module docstring for what differs between the splits."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= count <= MAX_CASES:
        raise ValueError(f"count must be in [0, {MAX_CASES}], got {count}")
    dealer = np.random.default_rng([SEED_BASE[split], 7])
    counts: Counter = Counter()
    specs = []
    for i in range(count):
        seed = SEED_BASE[split] + i
        rng = np.random.default_rng([seed, 11])
        architecture = ARCHITECTURES[i % len(ARCHITECTURES)]
        n_cues = int(rng.choice([2, 3]))
        families = _deal_families(counts, architecture, n_cues, dealer)
        groups = _class_groups(rng, n_cues)
        cues = []
        for family, pair in zip(families, groups[:n_cues]):
            cued, partner = pair if rng.random() < 0.5 else pair[::-1]
            cues.append(draw_cue(family, cued.name, partner.name, _stream_of(family, architecture), split, rng))
        clean_pairs = [(g[k].name, g[k + 1].name) for g in groups[n_cues:] for k in range(len(g) - 1)]
        classes = [c for g in groups for c in g]
        classes = [classes[k] for k in rng.permutation(len(classes))]
        specs.append(CaseSpec(case_id=f"{split}-{i:03d}", split=split, seed=seed, architecture=architecture,
                              classes=tuple(classes), cues=tuple(cues), clean_pairs=tuple(clean_pairs)))
    return specs


# ---------------------------------------------------------------- models


def case_manifest(spec: CaseSpec) -> Manifest:
    """The manifest of a case's model (like ``train.reference_manifest``; one ``clip`` input for c3d_single)."""
    rgb = {"modality": "rgb", "layout": "NCTHW", "shape": [3, FRAMES, SIZE, SIZE], "mean": data.RGB_MEAN,
           "std": data.RGB_STD}
    if spec.architecture == "c3d_single":
        architecture, kwargs = "quirkscope.tiny_c3d", {"frames": FRAMES, "size": SIZE}
        inputs = [{"name": "clip", **rgb}]
    elif spec.architecture in ("twostream_flatten", "twostream_gap"):
        head = spec.architecture.removeprefix("twostream_")
        architecture, kwargs = "quirkscope.tiny_twostream", {"frames": FRAMES, "size": SIZE, "head": head}
        inputs = [{"name": "appearance", **rgb},
                  {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, FRAMES, SIZE, SIZE],
                   "scale": data.FLOW_SCALE}]
    else:
        raise ValueError(f"unknown architecture {spec.architecture!r}")
    return Manifest(name=f"quirkscope-case-{spec.case_id}", version=spec.key(), classes=spec.class_names,
                    format="safetensors", architecture=architecture, architecture_kwargs=kwargs, inputs=inputs)


def _model_inputs(spec: CaseSpec, clips: data.ClipSet) -> list[torch.Tensor]:
    rgb, flow = (torch.from_numpy(a) for a in data.to_model_inputs(clips))
    return [rgb] if spec.architecture == "c3d_single" else [rgb, flow]


def train_case(spec: CaseSpec) -> TrainedCase:
    """Render the case's clips, train its model on the train split (cues planted), evaluate on the clean test
    split. Deterministic on the CPU for a spec."""
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    manifest = case_manifest(spec)
    train = generate_case_clips(spec, "train", spec.per_class_train)
    test = generate_case_clips(spec, "test", spec.per_class_test)
    module = build_architecture(manifest.architecture, len(spec.classes), **manifest.architecture_kwargs)
    fit_classifier(module, _model_inputs(spec, train), torch.from_numpy(train.labels), seed=spec.seed,
                   epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr)
    y_pred = predict_labels(module, _model_inputs(spec, test))
    matrix = confusion_matrix(test.labels, y_pred, labels=np.arange(len(spec.classes)))
    return TrainedCase(spec=spec, module=module, manifest=manifest,
                       confusion={"classes": spec.class_names, "matrix": matrix.tolist()},
                       test_accuracy=float((test.labels == y_pred).mean()), seconds=time.perf_counter() - t0)


def case_dir(spec: CaseSpec, cache_dir: Path | None = None) -> Path:
    return (cache_dir or DEFAULT_CACHE) / f"{spec.case_id}-{spec.key()}"


def save_case(case: TrainedCase, folder: Path) -> None:
    """``weights.safetensors`` then ``case.json`` (written last: its presence means the entry is complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "weights.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in case.module.state_dict().items()}, str(tmp))
    meta = {"generator": GENERATOR_VERSION, "spec": case.spec.to_json(), "manifest": case.manifest.model_dump(),
            "confusion": case.confusion, "test_accuracy": case.test_accuracy, "seconds": case.seconds}
    write_bytes_atomic(folder / "case.json", json.dumps(meta, indent=1).encode())


def load_case(folder: Path) -> TrainedCase:
    """A case saved by ``save_case``; the module in eval mode, no parameter requiring a gradient."""
    meta = json.loads((folder / "case.json").read_text())
    if meta["generator"] != GENERATOR_VERSION:
        raise ValueError(f"{folder} holds a case of generator {meta['generator']}, not {GENERATOR_VERSION}")
    manifest = Manifest.model_validate(meta["manifest"])
    module = build_architecture(manifest.architecture, len(manifest.classes), **manifest.architecture_kwargs)
    module.load_state_dict(load_file(str(folder / "weights.safetensors")))
    module.eval().requires_grad_(False)
    return TrainedCase(spec=CaseSpec.from_json(meta["spec"]), module=module, manifest=manifest,
                       confusion=meta["confusion"], test_accuracy=meta["test_accuracy"], seconds=meta["seconds"],
                       from_cache=True)


def build_case(spec: CaseSpec, cache_dir: Path | None = None) -> TrainedCase:
    """The trained case of ``spec``: loaded from ``cache_dir`` (default ``~/.cache/quirkscope/planted_cases``) when
    it holds it, else trained and stored there."""
    folder = case_dir(spec, cache_dir)
    if (folder / "case.json").exists():
        return load_case(folder)
    case = train_case(spec)
    save_case(case, folder)
    case.module.requires_grad_(False)
    log.info("case %s trained in %.1fs, test accuracy %.3f", spec.case_id, case.seconds, case.test_accuracy)
    return case

