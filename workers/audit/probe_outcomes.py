"""The pure side of the factor probes (``factor_probes``): which probes exist and what each one varies, which class
pairs serve as a pair's null, and how a measured probe is read against that null (``probe_outcome``). No torch here:
the flag rules and the web process read probe results through this module without loading the model stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PROBES = {"rgb": ("colour", "border", "texture"), "flow": ("camera",)}
KIND = {"colour": "static", "border": "static", "texture": "static", "camera": "motion"}
DESCRIPTIONS = {
    "colour": "one colour over the whole clip (a tint, a colour cast, lighting or white balance)",
    "border": "the border of the frame alone (letterbox or pillarbox bars, a frame, an overlay along the edges)",
    "texture": "a static pattern over the whole frame (a background scene, a texture behind the action)",
    "camera": "whole-frame motion alone (camera motion or shake)",
}


def probes_of(modality: str) -> tuple[str, ...]:
    return PROBES.get(modality, ())


def null_class_pairs(classes: Sequence[str], a: str, b: str, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` unordered pairs of the model's classes sharing no class with (a, b): all of them when there
    are few, else a fixed draw (the same for the same classes and pair). Pure."""
    others = [c for c in classes if c not in (a, b)]
    pairs = [(x, y) for i, x in enumerate(others) for y in others[i + 1:]]
    if len(pairs) <= limit:
        return pairs
    pick = np.random.default_rng([len(classes), classes.index(a), classes.index(b)]).choice(
        len(pairs), size=limit, replace=False)
    return [pairs[i] for i in sorted(pick)]


@dataclass(frozen=True)
class ProbeOutcome:
    holder: str          # the class the probe pushes the model towards
    lever: float
    ratio: float         # lever / median of the null pairs' levers (inf when that median is not positive)
    p_value: float       # (1 + null levers >= lever) / (1 + null pairs)
    null_size: int


def probe_outcome(test: dict, a: str, b: str) -> ProbeOutcome:
    """A pair's probe (``measure_factor_probes``' entry) read against its null: the direction with the larger lever,
    its ratio to the null's median and its empirical p-value. Pure."""
    a_over_b, b_over_a, null = test["a_over_b"], test["b_over_a"], test["null"]
    holder, lever = (a, a_over_b) if a_over_b >= b_over_a else (b, b_over_a)
    median = float(np.median(null)) if null else 0.0
    ratio = lever / median if median > 0 else float("inf")
    p_value = (1 + sum(v >= lever for v in null)) / (1 + len(null))
    return ProbeOutcome(holder=holder, lever=lever, ratio=ratio, p_value=p_value, null_size=len(null))
