"""The pure side of the factor probes (``factor_probes``): which probes exist and what each one varies, which of the
model's classes a pair's probes are measured on, and how a measured probe is read (``probe_outcome``). No torch
here: the flag rules and the web process read probe results through this module without loading the model stack.

A measured probe is a matrix of directed levers over a sample of the model's classes (the pair first): entry
[x][y] is how far the probe alone raises logit x - logit y above the blank clip's. It is read twice:

- **against other pairs**: the pair's larger lever against the larger levers of the pairs of the sample that share
  no class with it (ratio to their median, empirical p-value);
- **against other classes**: the holder's *affinity* for the factor (the median of its row: how far the factor
  pushes the model towards it from the other classes) against the other classes' affinities, on a log scale, as a
  new draw from them (a one-sided t prediction p-value). A class the model tells apart by a tint of its training
  clips is an outlier there; a class that merely answers featureless input more than the others (every model has
  one per factor) is not, however far its pairs stand from pairs without it.

Round 10 of docs/planted_cases.md: the first reading alone flagged 4 of the 6 clean pairs of the demo's reference
model, all about the class whose affinity for a colour was the largest of the model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import stdtr

PROBES = {"rgb": ("colour", "border", "texture", "patch"), "flow": ("camera", "spot")}
KIND = {"colour": "static", "border": "static", "texture": "static", "patch": "static", "camera": "motion",
        "spot": "motion"}
LOCAL_PROBES = ("patch", "spot")   # one window of the frame (``factor_probes.window_masks``)
DESCRIPTIONS = {
    "colour": "one colour over the whole clip (a tint, a colour cast, lighting or white balance)",
    "border": "the border of the frame alone (letterbox or pillarbox bars, a frame, an overlay along the edges)",
    "texture": "a static pattern over the whole frame (a background scene, a texture behind the action)",
    "patch": "a static pattern in one small window of the frame (a logo, a caption, a watermark, a sticker)",
    "camera": "whole-frame motion alone (camera motion or shake)",
    "spot": "motion in one small window of the frame that changes from frame to frame (a flicker, a jittering "
            "overlay, a blinking light)",
}
AFFINITY_FLOOR = 0.01   # affinities below this share of the largest one count as this (the log needs a floor)


def probes_of(modality: str) -> tuple[str, ...]:
    return PROBES.get(modality, ())


def probe_classes(classes: Sequence[str], a: str, b: str, limit: int) -> list[str]:
    """The classes a pair's probes are measured on: a, b, then up to ``limit`` others: all of them when there are
    few, else a fixed draw (the same for the same classes and pair), in the model's order. Pure."""
    others = [c for c in classes if c not in (a, b)]
    if len(others) > limit:
        pick = np.random.default_rng([len(classes), list(classes).index(a), list(classes).index(b)]).choice(
            len(others), size=limit, replace=False)
        others = [others[i] for i in sorted(pick)]
    return [a, b, *others]


@dataclass(frozen=True)
class ProbeOutcome:
    holder: str            # the class the probe pushes the model towards
    lever: float
    ratio: float           # lever / median of the null pairs' levers (inf when that median is not positive)
    p_value: float         # (1 + null levers >= lever) / (1 + null pairs)
    null_size: int
    class_p_value: float   # the holder's affinity as a new draw from the other classes' (``affinity_p_value``)
    classes_size: int      # classes the affinities were compared over, the holder included
    peak_xy: tuple[float, float] | None = None   # a local probe's window centre (frame fractions), holder over partner


def class_affinities(levers: np.ndarray) -> np.ndarray:
    """(K,) each class's median lever over the other classes of a (K, K) directed-lever matrix. Pure."""
    k = len(levers)
    return np.array([np.median([levers[c, y] for y in range(k) if y != c]) for c in range(k)])


def affinity_p_value(affinities: np.ndarray, holder: int) -> float:
    """One-sided p-value of the holder's log affinity as a new draw from the other classes' log affinities (the t
    prediction interval of their mean, n - 1 degrees of freedom); affinities are floored at ``AFFINITY_FLOOR`` of
    the largest. 1.0 with fewer than 3 other classes or none positive. Pure."""
    aff = np.asarray(affinities, dtype=np.float64)
    if len(aff) < 4 or aff.max() <= 0:
        return 1.0
    logs = np.log(np.maximum(aff, AFFINITY_FLOOR * aff.max()))
    rest = np.delete(logs, holder)
    spread = rest.std(ddof=1)
    if spread == 0:
        return 0.0 if logs[holder] > rest[0] else 1.0
    t = (logs[holder] - rest.mean()) / (spread * np.sqrt(1 + 1 / len(rest)))
    return float(stdtr(len(rest) - 1, -t))


def probe_outcome(test: dict, a: str, b: str) -> ProbeOutcome:
    """A pair's probe (``factor_probes.measure_factor_probes``' entry: ``classes`` and their ``levers``, the
    diagonal None) read against the other pairs and the other classes of its sample; a local probe's entry
    (``window_levers``) is read by ``local_probe_outcome``. Pure."""
    if "window_levers" in test:
        return local_probe_outcome(test, a, b)
    classes = list(test["classes"])
    levers = np.array([[np.nan if v is None else v for v in row] for row in test["levers"]], dtype=np.float64)
    ia, ib = classes.index(a), classes.index(b)
    (ih, ip) = (ia, ib) if levers[ia, ib] >= levers[ib, ia] else (ib, ia)
    return _read(levers, classes, ih, ip)


def local_probe_outcome(test: dict, a: str, b: str) -> ProbeOutcome:
    """A local probe's entry (``window_levers`` [x][y]: the lever of x over y of each window alone, ``grid`` x
    ``grid`` windows row by row) read in the one window where the pair's lever is largest, either way: against the
    other pairs' levers *in that window* and the other classes' pull towards that window. A class told from its
    partner by something in one place of the frame stands out there; classes told apart by their content answer a
    window on their path about as much as the other pairs do. ``peak_xy`` is the window's centre. Pure."""
    classes = list(test["classes"])
    k, grid = len(classes), int(test["grid"])
    windows = np.full((k, k, grid * grid), np.nan)
    for x, row in enumerate(test["window_levers"]):
        for y, values in enumerate(row):
            if values is not None:
                windows[x, y] = values
    ia, ib = classes.index(a), classes.index(b)
    g = int(np.nanargmax(np.maximum(windows[ia, ib], windows[ib, ia])))
    (ih, ip) = (ia, ib) if windows[ia, ib, g] >= windows[ib, ia, g] else (ib, ia)
    row, col = divmod(g, grid)
    return _read(windows[:, :, g], classes, ih, ip, peak_xy=((col + 0.5) / grid, (row + 0.5) / grid))


def _read(levers: np.ndarray, classes: list[str], ih: int, ip: int,
          peak_xy: tuple[float, float] | None = None) -> ProbeOutcome:
    """The holder ``ih``'s lever over ``ip`` in a (K, K) directed-lever matrix (diagonal NaN), read against the
    pairs of the other classes and the holder's affinity against the other classes'. Pure."""
    lever = float(levers[ih, ip])
    others = [c for c in range(len(classes)) if c not in (ih, ip)]
    null = [max(levers[x, y], levers[y, x]) for i, x in enumerate(others) for y in others[i + 1:]]
    median = float(np.median(null)) if null else 0.0
    return ProbeOutcome(
        holder=classes[ih], lever=lever, ratio=lever / median if median > 0 else float("inf"),
        p_value=(1 + sum(v >= lever for v in null)) / (1 + len(null)), null_size=len(null),
        class_p_value=affinity_p_value(class_affinities(levers), ih), classes_size=len(classes), peak_xy=peak_xy)
