"""Global factors of a visualisation: properties of the whole clip rather than of one place in it -- its overall
colour and its frame border; on a moving input, how it moves as a whole. A shortcut can live in any of them (a
colour cast, letterbox bars, camera shake, a flicker) and none stands out in one window of the
occlusion scan, so each gets its own swap test: a class's visualisations get the partner's value of that one
factor, everything else kept, and the model says how much of the class's margin goes with it (``evidence``).

The motion factors were first tried in round 2 (docs/planted_cases.md) and left out: activation maximisation leaves
a visualisation's flow far from any real clip, and the model answers any global change to it (clean control pairs
moved by up to 8.8x their usual margin). Since round 11 every factor is also judged against the model's own null
(the same swap on class pairs the audit does not confuse, ``flags.beats_factor_null``), which is what a model that
answers every change needs; round 12 measured them again under it and kept the two that found cues on the
calibration split without flagging clean pairs: the camera's shake and the frame-to-frame flutter. The flow's
overall magnitude (speed: scaled to the partner's, or a fixed step faster or slower) found no speed cue there and
raised only wrong flags; the whole frame's flow swapped for the partner's found nothing the shake did not.

Pure numpy: sample sets (S, C, T, H, W) in model space (0 = the neutral input: the mean colour, no flow).

==================  =============  =============================================================================
factor              input          swapped for the partner's
==================  =============  =============================================================================
``colour``          rgb            per-channel mean over the frames and pixels (a tint of the whole clip)
``border``          rgb            the outer ring of the frame, ``BORDER_FRACTION`` of the shorter side wide
``shake``           flow           the camera's shake: each frame's flow common to the whole frame less its mean
                                   over the frames; a fixed shake (+-1 root mean square of the class's flow, every
                                   other frame) added when the partner's visualisations shake more, its own taken
                                   out when they shake less -- the partner's kind of camera, whatever amplitude the
                                   visualiser let either reach
``flutter``         flow of >= 3   the part that changes from one frame to the next faster than a 3-frame average
                    frames         follows (a flicker, a blink, a jitter), the rest kept
==================  =============  =============================================================================
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from workers.engine.manifest import InputSpec

BORDER_FRACTION = 0.125
FACTORS = {"rgb": ("colour", "border"), "flow": ("shake", "flutter")}
MIN_FLUTTER_FRAMES = 3
KIND = {"colour": "static", "border": "static", "shake": "motion", "flutter": "motion"}
DESCRIPTIONS = {
    "colour": "the overall colour of the clip (a tint, a colour cast, a lighting or white-balance difference)",
    "border": "the border of the frame (letterbox or pillarbox bars, a frame, an overlay along the edges)",
    "shake": "the shake of the whole frame (camera shake or sway)",
    "flutter": "what changes from one frame to the next faster than the content moves (a flicker, a blink, a "
               "jitter)",
}
EPS = 1e-8


def factors_of(modality: str, num_frames: int = 1) -> tuple[str, ...]:
    """The global factors of an input of this modality carrying ``num_frames`` frames: colour and border for
    RGB; the camera's shake for flow, and flutter for flow of >= ``MIN_FLUTTER_FRAMES`` frames. An RGB clip's
    flutter was measured in round 12 and left out: on the 40 calibration cases its swap cost no class more than
    0.04 of its usual margin (the visualisations' temporal regularisation leaves little to swap), and it was a sixth
    of the two-stream reference model's swap tests."""
    return tuple(f for f in FACTORS.get(modality, ()) if f != "flutter" or num_frames >= MIN_FLUTTER_FRAMES)


def factor_tests(specs: Sequence[InputSpec]) -> list[tuple[str, str]]:
    """(stream, factor) for every global factor of every input of a model, in input order."""
    return [(spec.name, factor) for spec in specs for factor in factors_of(spec.modality, spec.num_frames)]


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


def frame_means(x: np.ndarray) -> np.ndarray:
    """(S, C, T, 1, 1): each frame's per-channel mean over the pixels (for flow: the camera's displacement)."""
    return x.mean(axis=(3, 4), keepdims=True)


def camera_shake(x: np.ndarray) -> np.ndarray:
    """(S, C, T, 1, 1): each frame's flow common to the whole frame less its mean over the frames -- how the camera
    shakes or sways, not where the content drifts."""
    means = frame_means(x)
    return means - means.mean(axis=2, keepdims=True)


def rms(x: np.ndarray) -> np.ndarray:
    """(S,): each sample's root mean square."""
    return np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=tuple(range(1, x.ndim))))


def shake_pattern(channels: int, frames: int) -> np.ndarray:
    """(1, C, T, 1, 1): a fixed zero-mean shake, +-1 alternating from frame to frame, the channels out of step."""
    signs = np.array([1.0 if (t + c) % 2 == 0 else -1.0 for c in range(channels) for t in range(frames)])
    pattern = signs.reshape(1, channels, frames, 1, 1)
    return pattern - pattern.mean(axis=2, keepdims=True)


def swap_shake(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """``own`` given the partner's kind of camera: shaken (``shake_pattern`` times each sample's root mean square)
    when the partner samples shake more (``factor_amount``), else with its own shake (``camera_shake``) taken out.
    A fixed shake rather than the partner's own: the visualiser's regularisers decide how far either class's flow
    goes."""
    if factor_amount(partner, "shake") <= factor_amount(own, "shake"):
        return own - camera_shake(own)
    scale = rms(own).reshape((-1,) + (1,) * (own.ndim - 1))
    return (own + scale * shake_pattern(own.shape[1], own.shape[2])).astype(own.dtype)


def temporal_smooth(x: np.ndarray) -> np.ndarray:
    """A 3-frame average (1/4, 1/2, 1/4) along T with the end frames repeated: what moves slower than a frame."""
    padded = np.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
    return 0.25 * padded[:, :, :-2] + 0.5 * padded[:, :, 1:-1] + 0.25 * padded[:, :, 2:]


def swap_flutter(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """``own``'s slow part (``temporal_smooth``) with the partner samples' mean fast part in place of its own."""
    return temporal_smooth(own) + (partner - temporal_smooth(partner)).mean(axis=0, keepdims=True)


SWAPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "colour": swap_colour, "border": swap_border, "shake": swap_shake, "flutter": swap_flutter}


def factor_amount(samples: np.ndarray, factor: str) -> float:
    """How much of a factor a sample set holds, comparable between two classes: the distance of its mean colour
    from the neutral colour; the border ring's mean square against the whole frame's. The class holding more is
    the one the factor is about (a tinted clip, bars), whichever side the swap test found it from. Motion: the mean
    size of the camera's shake; the fast part's mean square against the whole's."""
    x = samples.astype(np.float64)
    if factor == "shake":
        return float(np.linalg.norm(camera_shake(x), axis=1).mean())
    if factor == "flutter":
        return float(np.mean((x - temporal_smooth(x)) ** 2) / max(float(np.mean(x ** 2)), EPS))
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
