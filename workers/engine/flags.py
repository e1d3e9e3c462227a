"""Flags: the rules that turn a pair's scores into findings a reviewer should look at (DESIGN 4.4). Pure: scores
and thresholds in, a list of flags out. Thresholds live in one config object and were calibrated on the generated
benchmark (tests/benchmarks/planted_quirks.py), where the planted pairs must be flagged and clean pairs must not.

LOCALIZED_CUE reads the occlusion scan of ``analysis.localise``: the stream must matter (swapping it whole loses
>= 15% of the pair's margin), one window (a fifth of the frame's side) must hold >= 15% of that, and it must hold
>= 2.2x what any non-overlapping window holds. On 3 seeds of the reference benchmark the planted windows stood out
by 2.24-3.09x and no window of a pair without a planted shortcut by more than 2.16x: the margin is thin and the
threshold is the first thing to recalibrate on a real data set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

from pydantic import BaseModel, ConfigDict, Field

from workers.engine.manifest import InputSpec

if TYPE_CHECKING:  # the web process validates FlagThresholds without importing torch
    from workers.engine.analysis import PairScores


class FlagThresholds(BaseModel):
    """When each flag fires. See the module docstring for where the defaults come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    localized_min_stream_drop: float = Field(0.15, ge=0, le=1)
    localized_min_share: float = Field(0.15, ge=0, le=1)
    localized_separation: float = Field(2.2, ge=1)
    only_separation_share: float = Field(0.9, ge=0.5, le=1)
    shared_feature_similarity: float = Field(0.9, ge=-1, le=1)
    shared_logit_ratio: float = Field(0.5)
    context_motion_reliance: float = Field(0.1, ge=0, le=1)


@dataclass(frozen=True)
class Flag:
    code: str
    stream: str | None
    severity: str          # "low" | "medium" | "high"
    message: str
    peak_xy: tuple[float, float] | None = None

    def to_json(self) -> dict:
        out = asdict(self)
        out["peak_xy"] = list(self.peak_xy) if self.peak_xy is not None else None
        return out


def _where(xy: tuple[float, float]) -> str:
    x, y = xy
    vertical = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    place = "centre" if (vertical, horizontal) == ("middle", "centre") else f"{vertical}-{horizontal}"
    return f"the {place} of the frame (x={x:.2f}, y={y:.2f})"


def derive_flags(s: "PairScores", specs: Sequence[InputSpec], th: FlagThresholds | None = None) -> list[Flag]:
    """Flags of one pair, most specific first."""
    th = th or FlagThresholds()
    flags: list[Flag] = []
    modality = {spec.name: spec.modality for spec in specs}
    for name, st in s.streams.items():
        loc = st.localisation
        if (loc.whole_stream_drop >= th.localized_min_stream_drop and loc.peak_share >= th.localized_min_share
                and loc.peak_separation >= th.localized_separation):
            other = s.b if st.peak_favours == s.a else s.a
            what = "something static such as a logo, watermark or overlay" if modality[name] == "rgb" \
                else "a local movement such as a flicker, a camera artefact or a moving overlay"
            severity = "high" if loc.peak_share >= 2 * th.localized_min_share else "medium"
            flags.append(Flag(
                "LOCALIZED_CUE", name, severity,
                f"A small region of the {name} input at {_where(st.peak_xy)} holds {loc.peak_share:.0%} of what the "
                f"{name} stream uses to tell {s.a} from {s.b} ({loc.peak_separation:.1f}x any other region), and the "
                f"evidence there is stronger for {st.peak_favours}: check whether {st.peak_favours}'s training clips carry {what} there "
                f"that {other}'s lack.", st.peak_xy))
    if len(s.streams) > 1:
        for name, st in s.streams.items():
            if st.separation_share >= th.only_separation_share and st.separation_margin > 0:
                others = [n for n in s.streams if n != name]
                kind = "APPEARANCE_ONLY_SEPARATION" if modality[name] == "rgb" else "MOTION_ONLY_SEPARATION"
                flags.append(Flag(
                    kind, name, "medium",
                    f"{s.a} and {s.b} are told apart by the {name} stream alone ({st.separation_share:.0%} of the "
                    f"margin; {', '.join(others)} evidence near-identical): look at what differs in {name} between "
                    f"their training clips, starting at {_where(st.peak_xy)}.", st.peak_xy))
    ratio = min(s.cross_activation["a_on_b_logit_ratio"], s.cross_activation["b_on_a_logit_ratio"])
    if s.overall_feature_similarity >= th.shared_feature_similarity or ratio >= th.shared_logit_ratio:
        flags.append(Flag(
            "SHARED_EVIDENCE", None, "medium",
            f"The model's evidence for {s.a} and {s.b} largely coincides (feature similarity "
            f"{s.overall_feature_similarity:.2f}, cross-activation {ratio:.2f}): compare the two classes' clips for "
            f"what, other than the shared content, the labels could depend on."))
    has_motion = len({spec.num_frames for spec in specs if spec.num_frames > 1}) > 0
    if has_motion:
        for cls, value in s.motion_reliance.items():
            if value < th.context_motion_reliance:
                stream = next((spec.name for spec in specs if spec.modality == "rgb"), None)
                flags.append(Flag(
                    "CONTEXT_CUE", stream, "low",
                    f"{cls}'s evidence does not need motion (removing it costs {value:.0%} of the class score): "
                    f"the class may be recognised from scene or object context alone; look at its still frames."))
    return flags
