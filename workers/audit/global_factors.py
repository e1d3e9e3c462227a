"""Global factors of a visualisation: properties of the whole clip rather than of one place in it -- its overall
colour and its frame border. A shortcut can live in either (a colour cast, letterbox bars) and neither stands out
in one window of the occlusion scan, so each gets its own swap test: a class's visualisations get the partner's
value of that one factor, everything else kept, and the model says how much of the class's margin goes with it
(``evidence``).

Motion has no factor here. The same swap of the flow common to the whole frame (camera motion) and of the
flow's magnitude (speed) was measured on the calibration split of the planted cases in round 2 and moved the
margins of clean control pairs by up to 8.8x the class's usual margin: activation maximisation leaves the flow of a
visualisation far from any real clip, and the model answers any global change to it. Round 12 tried motion factors
again against the model's own null (the camera's shake, the flow's speed, the frame-to-frame flutter): they found
1 and 0 more cues on two fresh held-out draws, and on the demo's reference model they flagged 2 of its 5 clean
pairs, both about its one orbiting class, whose own motion reads as a shaking, fluttering frame
(docs/planted_cases.md).

Pure numpy: sample sets (S, C, T, H, W) in model space (0 = the neutral input: the mean colour, no flow).

==================  ========  ====================================================================================
factor              modality  swapped for the partner's
==================  ========  ====================================================================================
``colour``          rgb       per-channel mean over the frames and pixels (a tint of the whole clip)
``border``          rgb       the outer ring of the frame, ``BORDER_FRACTION`` of the shorter side wide, all frames
==================  ========  ====================================================================================
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from workers.engine.manifest import InputSpec

BORDER_FRACTION = 0.125
FACTORS = {"rgb": ("colour", "border")}
DESCRIPTIONS = {
    "colour": "the overall colour of the clip (a tint, a colour cast, a lighting or white-balance difference)",
    "border": "the border of the frame (letterbox or pillarbox bars, a frame, an overlay along the edges)",
}
EPS = 1e-8


def factors_of(modality: str) -> tuple[str, ...]:
    """The global factors a stream of this modality has (none for other modalities)."""
    return FACTORS.get(modality, ())


def factor_tests(specs: Sequence[InputSpec]) -> list[tuple[str, str]]:
    """(stream, factor) for every global factor of every input of a model, in input order."""
    return [(spec.name, factor) for spec in specs for factor in factors_of(spec.modality)]


def border_mask(height: int, width: int, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """(H, W) bool: the outer ring of the frame, ``fraction`` of the shorter side wide (at least 1 px)."""
    ring = max(1, round(fraction * min(height, width)))
    mask = np.ones((height, width), dtype=bool)
    mask[ring:height - ring, ring:width - ring] = False
    return mask


def swap_colour(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """``own`` (S, C, T, H, W) with each sample's per-channel mean replaced by the partner samples' mean one."""
    own_mean = own.mean(axis=(2, 3, 4), keepdims=True)
    partner_mean = partner.mean(axis=(0, 2, 3, 4), keepdims=True)
    return own - own_mean + partner_mean


def swap_border(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """``own`` with the outer ring of every frame replaced by the partner samples' mean there."""
    mask = border_mask(own.shape[-2], own.shape[-1])
    out = own.copy()
    out[..., mask] = partner.mean(axis=0)[..., mask][None]
    return out


SWAPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"colour": swap_colour, "border": swap_border}


def factor_amount(samples: np.ndarray, factor: str) -> float:
    """How much of a factor a sample set holds, comparable between two classes: the distance of its mean colour
    from the neutral colour; the border ring's mean square against the whole frame's. The class holding more is
    the one the factor is about (a tinted clip, bars), whichever side the swap test found it from."""
    x = samples.astype(np.float64)
    if factor == "colour":
        return float(np.linalg.norm(x.mean(axis=(0, 2, 3, 4))))
    if factor == "border":
        mask = border_mask(x.shape[-2], x.shape[-1])
        return float(np.mean(x[..., mask] ** 2) / max(float(np.mean(x ** 2)), EPS))
    raise ValueError(f"unknown global factor {factor!r}")


def holder(own: np.ndarray, partner: np.ndarray, factor: str, names: tuple[str, str]) -> str:
    """Of two classes' sample sets (``names`` = (own's class, partner's class)), the one holding more of
    ``factor`` (``factor_amount``)."""
    return names[0] if factor_amount(own, factor) >= factor_amount(partner, factor) else names[1]


def swap_effect(change: dict) -> float | None:
    """A global factor's swap effect on one class (``evidence.margin_change``): the margin over the partner it
    costs, in units of how far the class usually stands from the model's other classes (``scale``). A share of
    the margin over the partner alone would not do: honestly confused classes have small margins, and any change
    is a large share of them. None without a scale. Pure."""
    scale = change.get("scale")
    return change["delta"] / scale if scale is not None and scale > 1e-6 else None


def pair_effect(test: dict) -> float | None:
    """The larger ``swap_effect`` of a pair's two classes in one factor's swap test (``{"holder", "classes"}``);
    None when neither has one. Pure."""
    effects = [e for change in test["classes"].values() if (e := swap_effect(change)) is not None]
    return max(effects) if effects else None
