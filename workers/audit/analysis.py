"""The scores of a confused pair (DESIGN 4.4) as pure maths: the model's numbers (``evidence.PairEvidence``,
measured in the GPU worker) combined with what the stored visualisations show on their own (the seed-consistent
difference map, speed invariance), plus the window geometry of the localisation. numpy only, no model: this runs
on the ``cpu`` queue.

Sample sets per stream are ``{stream: (S, C, T, H, W)}`` in model space, canonical layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Sequence

import numpy as np

from workers.audit import global_factors, scores
from workers.audit.ranking import disjoint
from workers.engine.manifest import InputSpec

SampleSet = dict[str, np.ndarray]
Box = tuple[int, int, int, int]

# Windows whose corner lies at least this many window sides from the peak's (in x or y) count as "elsewhere": a
# cue may spill into the windows next to its own, so those are not its competitors.
ELSEWHERE_SIDES = 2


def scan_windows(height: int, width: int, fraction: float = 0.125) -> tuple[list[Box], int]:
    """Square windows of side ``fraction`` of the shorter side (at least 2 px), at a stride of half a side, that
    tile the frame; returns (boxes (y0, y1, x0, x1), side)."""
    side = max(2, int(round(fraction * min(height, width))))
    stride = max(1, side // 2)
    ys = sorted(set(list(range(0, height - side + 1, stride)) + [height - side]))
    xs = sorted(set(list(range(0, width - side + 1, stride)) + [width - side]))
    return [(y, y + side, x, x + side) for y in ys for x in xs], side


def far_from(box: Box, other: Box, side: int, sides: int = ELSEWHERE_SIDES) -> bool:
    """True when the two windows' corners are at least ``sides`` window sides apart in x or y."""
    return abs(box[0] - other[0]) >= sides * side or abs(box[2] - other[2]) >= sides * side


def window_sums(values: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """(S, H, W) -> (S, len(boxes)): the sum of each sample's values inside each box (an integral image)."""
    integral = np.pad(np.cumsum(np.cumsum(values.astype(np.float64), axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
    y0, y1, x0, x1 = (np.array(c) for c in zip(*boxes))
    return integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]


def peak_window(drops: np.ndarray, boxes: Sequence[Box], side: int, peak: int | None = None) -> tuple[int, float]:
    """The peak window (``peak``, default the largest drop) and how many times the strongest window elsewhere (at
    least ``ELSEWHERE_SIDES`` sides away) it holds; inf when nothing elsewhere has a positive drop."""
    k = int(np.argmax(drops)) if peak is None else peak
    far = np.array([far_from(box, boxes[k], side) for box in boxes])
    second = float(drops[far].max()) if far.any() else 0.0
    value = float(drops[k])
    if second > 1e-6:
        return k, value / second
    return k, float("inf") if value > 0 else 0.0


def peak_consistency(per_sample: np.ndarray, boxes: Sequence[Box], side: int, peak: int) -> tuple[int, int, float]:
    """How consistently the peak window stands out across a class's visualisations (independent optimisation
    runs: seeds and kappa levels). ``per_sample`` (len(boxes), S): each sample's drop per window. Returns (in how
    many samples the peak window costs more than that sample's strongest window elsewhere, S, the one-sided
    sign-test p-value of that many or more if the peak were no different from the windows elsewhere). Pure."""
    from scipy.stats import binomtest

    n = per_sample.shape[1]
    far = np.array([far_from(box, boxes[peak], side) for box in boxes])
    elsewhere = per_sample[far].max(axis=0) if far.any() else np.zeros(n)
    wins = int((per_sample[peak] > elsewhere).sum())
    return wins, n, float(binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0


@dataclass
class Localisation:
    """Where one stream's separation of a pair sits, in the direction (class) whose evidence is most localised:
    how much of that class's margin over the other its peak window holds."""

    favours: str                 # the class whose evidence sits in the peak window (removing it costs that class)
    whole_stream_drop: float     # share of the margin lost when the whole stream is swapped (mean of both classes)
    peak_drop: float             # share of ``favours``'s margin lost when only the peak window is swapped
    peak_share: float            # peak_drop / the same class's whole-stream drop
    peak_separation: float       # peak_drop / the strongest window elsewhere in the frame
    peak_xy: tuple[float, float] # normalised centre of the peak window
    peak_wins: int = 0           # samples of ``favours`` in which the peak window beats the strongest one elsewhere
    samples: int = 0             # of how many (0: evidence stored before this was measured)
    p_value: float = 1.0         # one-sided sign test of peak_wins (``peak_consistency``)


@dataclass
class StreamScores:
    feature_similarity: float          # cosine of mean penultimate features (this stream alone), centred on neutral
    separation_margin: float           # mean logit margin of each class over the other, this stream alone
    separation_share: float            # this stream's share of the whole-stream swap drops of all streams
    difference_concentration: float    # energy share of the top 5% pixels of the consistent difference map
    difference_peak_xy: tuple[float, float]   # peak of the consistent difference map
    localisation: Localisation         # where the separation sits (verified windows)
    difference_map: np.ndarray = field(repr=False)
    cue_class: str | None = None       # the class whose visualisations hold something in the peak window

    @property
    def peak_xy(self) -> tuple[float, float]:
        return self.localisation.peak_xy

    def to_json(self) -> dict:
        loc = self.localisation
        return {"feature_similarity": self.feature_similarity, "separation_margin": self.separation_margin,
                "separation_share": self.separation_share, "difference_concentration": self.difference_concentration,
                "difference_peak_xy": list(self.difference_peak_xy), "whole_stream_drop": loc.whole_stream_drop,
                "peak_drop": loc.peak_drop, "peak_share": loc.peak_share,
                "peak_separation": loc.peak_separation if np.isfinite(loc.peak_separation) else None,
                "peak_xy": list(loc.peak_xy), "peak_favours": loc.favours, "cue_class": self.cue_class,
                "peak_wins": loc.peak_wins, "peak_samples": loc.samples, "peak_p_value": loc.p_value}


@dataclass
class PairScores:
    a: str
    b: str
    cross_activation: dict[str, float]               # a_on_b: softmax of b on a's visualisations; b_on_a; *_logit_ratio
    streams: dict[str, StreamScores]
    stream_reliance: dict[str, dict[str, float]]     # class -> stream -> share of the class logit lost without it
    stream_evidence: dict[str, dict[str, float]]     # class -> stream -> its margin over the partner, stream alone
    motion_reliance: dict[str, float]                # class -> share of the logit lost when all motion is removed
    speed_invariance: dict[str, dict[str, float]]    # class -> stream -> similarity across kappa levels
    overall_feature_similarity: float
    target_softmax: dict[str, float] = field(default_factory=dict)   # class -> lowest softmax of it on its own
    # class -> stream -> that stream's share of the class's stream-alone margins over its partner, and the same share
    # over the model's other classes (``stream_share_baseline``); empty for evidence stored before it existed
    stream_share: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # class -> share of its margin over the partner kept without motion, and the same over the model's other
    # classes (``static_share_baseline``); empty when the evidence has none
    static_share: dict[str, dict[str, float]] = field(default_factory=dict)
    # stream -> global factor -> its swap test (``evidence.measure_global_factors``); empty for older evidence
    global_factors: dict[str, dict[str, dict]] = field(default_factory=dict)
    # class -> its margin over the partner on its own visualisations, in units of its median margin over the
    # model's other classes (``decisiveness``); empty for older evidence
    decisiveness: dict[str, float | None] = field(default_factory=dict)
    # how the audit's *other* classes lean on each stream (``audit_baseline``): stream -> {"median", "classes"}, and
    # the same for the share kept without motion; empty when judged without the rest of the audit
    audit_stream_share: dict[str, dict[str, float]] = field(default_factory=dict)
    audit_static_share: dict[str, float] = field(default_factory=dict)
    # stream -> global factor -> the median of its swap effect over the audit's other pairs (``factor_baseline``)
    audit_factor_effect: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # the occlusion scans of this pair's null pairs (``evidence.PairEvidence.null_localisation``), and stream -> the
    # peak separations of the audit's null pairs outside this pair (``AuditLeanings.localisation_null_for``; None:
    # infinite), the model's own null of LOCALIZED_CUE; empty for older evidence or without the rest of the audit
    null_localisation: list[dict] = field(default_factory=list)
    audit_localisation_null: dict[str, list[float | None]] = field(default_factory=dict)
    # stream -> global factor -> the swap effects (``global_factors.swap_effect``) of the audit's null pairs outside
    # this pair (``AuditLeanings.factor_null_for``), the model's own null of GLOBAL_APPEARANCE_CUE; empty for older
    # evidence or without the rest of the audit
    audit_factor_null: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # stream -> factor probe -> its levers and null (``evidence.PairEvidence.factor_probes``); empty for older
    # evidence
    factor_probes: dict[str, dict[str, dict]] = field(default_factory=dict)

    def partner_of(self, cls: str) -> str:
        """The pair's other class than ``cls``."""
        return self.b if cls == self.a else self.a

    def to_json(self) -> dict:
        """Plain JSON types only (numpy scalars become floats), ready for a DB JSON column."""
        return plain_json({
            "cross_activation": self.cross_activation,
            "feature_similarity": self.overall_feature_similarity,
            **{name: s.to_json() for name, s in self.streams.items()},
            "stream_reliance": self.stream_reliance,
            "stream_evidence": self.stream_evidence,
            "motion_reliance": self.motion_reliance,
            "speed_invariance": self.speed_invariance,
            "target_softmax": self.target_softmax,
            "stream_share": self.stream_share,
            "static_share": self.static_share,
            "global_factors": self.global_factors,
            "decisiveness": self.decisiveness,
            "audit_stream_share": self.audit_stream_share,
            "audit_static_share": self.audit_static_share,
            "audit_factor_effect": self.audit_factor_effect,
            "null_localisation": self.null_localisation,
            "audit_localisation_null": self.audit_localisation_null,
            "audit_factor_null": self.audit_factor_null,
            "factor_probes": self.factor_probes,
        })

    @classmethod
    def from_json(cls, data: dict, a: str, b: str) -> "PairScores":
        """A pair's scores back from ``to_json`` (the DB column, the report JSON), enough to derive its flags again
        under other thresholds; the difference maps are not stored and come back empty. Pure."""
        streams = {}
        for name, st in data.items():
            if not (isinstance(st, dict) and "whole_stream_drop" in st):
                continue
            sep = st["peak_separation"]
            loc = Localisation(favours=st["peak_favours"], whole_stream_drop=st["whole_stream_drop"],
                               peak_drop=st["peak_drop"], peak_share=st["peak_share"],
                               peak_separation=float("inf") if sep is None else sep, peak_xy=tuple(st["peak_xy"]),
                               peak_wins=st.get("peak_wins", 0), samples=st.get("peak_samples", 0),
                               p_value=st.get("peak_p_value", 1.0))
            streams[name] = StreamScores(
                feature_similarity=st["feature_similarity"], separation_margin=st["separation_margin"],
                separation_share=st["separation_share"], difference_concentration=st["difference_concentration"],
                difference_peak_xy=tuple(st["difference_peak_xy"]), localisation=loc,
                difference_map=np.zeros((0, 0)), cue_class=st.get("cue_class"))
        return cls(a=a, b=b, cross_activation=data["cross_activation"], streams=streams,
                   stream_reliance=data["stream_reliance"], stream_evidence=data["stream_evidence"],
                   motion_reliance=data["motion_reliance"], speed_invariance=data["speed_invariance"],
                   overall_feature_similarity=data["feature_similarity"],
                   target_softmax=data.get("target_softmax", {}), stream_share=data.get("stream_share", {}),
                   static_share=data.get("static_share", {}), global_factors=data.get("global_factors", {}),
                   decisiveness=data.get("decisiveness", {}),
                   audit_stream_share=data.get("audit_stream_share", {}),
                   audit_static_share=data.get("audit_static_share", {}),
                   audit_factor_effect=data.get("audit_factor_effect", {}),
                   null_localisation=data.get("null_localisation", []),
                   audit_localisation_null=data.get("audit_localisation_null", {}),
                   audit_factor_null=data.get("audit_factor_null", {}),
                   factor_probes=data.get("factor_probes", {}))


def stream_shares(margin_by_stream: dict[str, float]) -> dict[str, float] | None:
    """Each stream's share of a class's positive stream-alone margins over one other class; None when no stream
    alone gives it any. Pure."""
    total = sum(max(m, 0.0) for m in margin_by_stream.values())
    if total <= 0.0:
        return None
    return {name: max(m, 0.0) / total for name, m in margin_by_stream.items()}


def stream_share_baseline(margins: dict[str, dict[str, float]], partner: str) -> dict[str, dict[str, float | None]]:
    """How one class leans on each stream against its partner, next to how it leans on it against every other
    class of the model: ``margins`` is stream -> {other class: the class's margin over it, that stream alone}.
    Returns stream -> {"partner": share against the partner (0 when no stream alone separates them),
    "others_median", "others_high" (median and 90th percentile of the share over the other classes),
    "others": how many other classes gave a share}. What a model leans on for *every* class is how it works, not a
    quirk of this pair; the one-stream flags read the partner's share against this baseline. Pure."""
    streams = list(margins)
    others = sorted({c for per in margins.values() for c in per} - {partner})
    against_partner = stream_shares({s: margins[s][partner] for s in streams}) or {s: 0.0 for s in streams}
    shares = [got for c in others if (got := stream_shares({s: margins[s][c] for s in streams})) is not None]
    out = {}
    for s in streams:
        values = np.array([sh[s] for sh in shares]) if shares else np.array([])
        out[s] = {"partner": float(against_partner[s]),
                  "others_median": float(np.median(values)) if len(values) else None,
                  "others_high": float(np.quantile(values, 0.9)) if len(values) else None,
                  "others": int(len(values))}
    return out


def static_share_baseline(full: dict[str, float], static: dict[str, float], partner: str) -> dict[str, float | None]:
    """For a model whose one input carries both appearance and motion: how much of a class's margin over its
    partner survives with motion removed (its visualisations' frames replaced by their mean), next to the same
    share over every other class of the model. ``full`` / ``static``: {other class: margin}. Returns {"partner",
    "others_median", "others"}; a share is clipped to [0, 1] and taken only where the full margin is positive
    (partner: 0 when it is not). Pure."""
    def share(c: str) -> float | None:
        return float(np.clip(static[c] / full[c], 0.0, 1.0)) if full[c] > 1e-9 else None

    values = [v for c in full if c != partner and (v := share(c)) is not None]
    return {"partner": share(partner) or 0.0,
            "others_median": float(np.median(values)) if values else None, "others": len(values)}


def decisiveness(margins: dict[str, float], partner: str) -> float | None:
    """How decisively a class's visualisations beat its partner, for this model: the margin over the partner
    divided by the median margin over the model's other classes (``margins``: {other class: margin}). A shortcut
    is a strong reason to tell the class from its partner that test clips lack, so the class's own evidence beats
    the partner about as clearly as it beats everything else (about 1); classes the model honestly cannot tell
    apart have evidence that barely beats the partner (near 0). None without another class or a positive median.
    Pure."""
    others = [m for c, m in margins.items() if c != partner]
    if partner not in margins or not others:
        return None
    usual = float(np.median(others))
    return float(margins[partner] / usual) if usual > 1e-6 else None


def plain_json(value):
    """``value`` with numpy scalars as Python numbers and every key a string, ready for a JSON column."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def window_contrast(samples: np.ndarray, xy: tuple[float, float], side: int) -> float:
    """How much more a sample set (S, C, T, H, W) holds in the window of side ``side`` centred at normalised
    ``xy`` than in its whole frame: mean square inside / mean square overall (model space, where 0 is the neutral
    input: the mean colour, no flow). Pure."""
    _, _, _, h, w = samples.shape
    x0 = int(round(xy[0] * w - side / 2))
    y0 = int(round(xy[1] * h - side / 2))
    inside = samples[..., max(y0, 0):y0 + side, max(x0, 0):x0 + side].astype(np.float64)
    overall = float(np.mean(samples.astype(np.float64) ** 2))
    return float(np.mean(inside ** 2)) / max(overall, 1e-12)


def cue_class(vis_a: SampleSet, vis_b: SampleSet, spec: InputSpec, loc: Localisation, names: tuple[str, str],
              window_fraction: float = 0.125) -> str:
    """Which class carries what sits in the peak window. The scan may find a cue from either side (swapping a
    watermark *into* the partner's visualisations costs the partner as much as swapping it out of the class's
    own), so the class is the one whose visualisations stand out more in that window against their own frame:
    a static overlay is colour that the partner lacks there, a flicker is motion the partner lacks there."""
    _, side = scan_windows(spec.height, spec.width, window_fraction)
    a, b = (window_contrast(v[spec.name], loc.peak_xy, side) for v in (vis_a, vis_b))
    return names[0] if a >= b else names[1]


class PairShares(NamedTuple):
    """What one pair gives the audit's baselines: its ``stream_share``, ``static_share`` and ``global_factors``."""

    a: str
    b: str
    stream_share: dict[str, dict[str, dict]]
    static_share: dict[str, dict]
    global_factors: dict[str, dict[str, dict]]
    null_localisation: Sequence[dict] = ()

    @classmethod
    def of_scores(cls, s: "PairScores") -> "PairShares":
        """What a pair's stored scores give the audit's baselines (they keep the shares they were derived with)."""
        return cls(s.a, s.b, s.stream_share, s.static_share, s.global_factors, s.null_localisation)


def share_baselines(evidence: Any) -> PairShares:
    """A pair's shares and global-factor tests from its model evidence alone (no visualisations), so that every
    pair of an audit can give the others its baselines. Pure."""
    a, b = evidence.a, evidence.b
    return PairShares(a, b,
                      {cls: stream_share_baseline(per, b if cls == a else a)
                       for cls, per in evidence.stream_margins.items() if len(per) > 1},
                      {cls: static_share_baseline(m["full"], m["static"], b if cls == a else a)
                       for cls, m in evidence.motion_margins.items()},
                      evidence.global_factors, evidence.null_localisation)


@dataclass(frozen=True)
class AuditLeanings:
    """What each audited class leans on against the model's other classes (the median shares of
    ``stream_share_baseline`` and ``static_share_baseline``), and how much each audited pair loses to each global
    factor's swap (``global_factors.pair_effect``), gathered over every pair of one audit."""

    stream: dict[str, dict[str, float]]     # stream -> class -> median share of that stream
    static: dict[str, float]                # class -> median share kept without motion
    # stream -> factor -> pair (``pair_key``) -> its effect (``global_factors.pair_effect``)
    factors: dict[str, dict[str, dict[tuple[str, str], float]]] = field(default_factory=dict)
    # stream -> null pair (``pair_key``) -> the peak separation of its occlusion scan (None: infinite)
    localisation_null: dict[str, dict[tuple[str, str], float | None]] = field(default_factory=dict)
    # stream -> global factor -> null pair (``pair_key``) -> its one-way swap effect (``global_factors.swap_effect``)
    factor_null: dict[str, dict[str, dict[tuple[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def gather(cls, pairs: Sequence[PairShares]) -> "AuditLeanings":
        """From each pair's ``PairShares``; a class in several pairs keeps its first value (they differ only in which
        partner is left out of "the other classes"). Pure."""
        stream: dict[str, dict[str, float]] = {}
        static: dict[str, float] = {}
        factors: dict[str, dict[str, dict[tuple[str, str], float]]] = {}
        null: dict[str, dict[tuple[str, str], float | None]] = {}
        factor_null: dict[str, dict[str, dict[tuple[str, str], float]]] = {}
        for pair in pairs:
            for scan in pair.null_localisation:
                key = pair_key(scan["a"], scan["b"])
                for name, loc in scan["streams"].items():
                    null.setdefault(name, {}).setdefault(key, loc["peak_separation"])
                for name, per_factor in scan.get("global_factors", {}).items():
                    for factor, change in per_factor.items():
                        if (effect := global_factors.swap_effect(change)) is not None:
                            factor_null.setdefault(name, {}).setdefault(factor, {}).setdefault(key, effect)
            for name_cls, per in pair.stream_share.items():
                for name, base in per.items():
                    if base.get("others_median") is not None:
                        stream.setdefault(name, {}).setdefault(name_cls, base["others_median"])
            for name_cls, base in pair.static_share.items():
                if base.get("others_median") is not None:
                    static.setdefault(name_cls, base["others_median"])
            for name, tests in pair.global_factors.items():
                for factor, test in tests.items():
                    if (effect := global_factors.pair_effect(test)) is not None:
                        factors.setdefault(name, {}).setdefault(factor, {})[pair_key(pair.a, pair.b)] = effect
        return cls(stream=stream, static=static, factors=factors, localisation_null=null, factor_null=factor_null)

    def to_json(self) -> dict:
        """Plain JSON (a pair key as a two-item list)."""
        return plain_json({"stream": self.stream, "static": self.static,
                           "factors": {name: {factor: [[*key, effect] for key, effect in effects.items()]
                                              for factor, effects in tests.items()}
                                       for name, tests in self.factors.items()},
                           "localisation_null": {name: [[*key, sep] for key, sep in scans.items()]
                                                 for name, scans in self.localisation_null.items()},
                           "factor_null": {name: {factor: [[*key, effect] for key, effect in effects.items()]
                                                  for factor, effects in tests.items()}
                                           for name, tests in self.factor_null.items()}})

    @classmethod
    def from_json(cls, data: dict) -> "AuditLeanings":
        return cls(stream=data["stream"], static=data["static"],
                   factors={name: {factor: {pair_key(a, b): effect for a, b, effect in effects}
                                   for factor, effects in tests.items()}
                            for name, tests in data["factors"].items()},
                   localisation_null={name: {pair_key(a, b): sep for a, b, sep in scans}
                                      for name, scans in data.get("localisation_null", {}).items()},
                   factor_null={name: {factor: {pair_key(a, b): effect for a, b, effect in effects}
                                       for factor, effects in tests.items()}
                                for name, tests in data.get("factor_null", {}).items()})

    def localisation_null_for(self, pair: tuple[str, str]) -> dict[str, list[float | None]]:
        """stream -> the peak separations of the audit's null pairs that share no class with ``pair`` (a null pair
        holding one of its classes holds that class's cue, if it has one). Pure."""
        return {name: [sep for key, sep in scans.items() if disjoint(key, pair)]
                for name, scans in self.localisation_null.items()}

    def factor_null_for(self, pair: tuple[str, str]) -> dict[str, dict[str, list[float]]]:
        """stream -> global factor -> the swap effects of the audit's null pairs that share no class with ``pair``
        (as ``localisation_null_for``). Pure."""
        return {name: {factor: [e for key, e in effects.items() if disjoint(key, pair)]
                       for factor, effects in tests.items()}
                for name, tests in self.factor_null.items()}

    def baseline_for(self, pair: tuple[str, str]) -> tuple[dict[str, dict[str, float]], dict[str, float],
                                                           dict[str, dict[str, dict[str, float]]]]:
        """(stream -> baseline, static baseline, stream -> factor -> baseline) for one pair, from the classes and
        pairs outside it (``audit_baseline``, ``factor_baseline``)."""
        per_stream = {name: got for name, values in self.stream.items()
                      if (got := audit_baseline(values, pair)) is not None}
        per_factor = {name: {factor: got for factor, effects in tests.items()
                             if (got := factor_baseline(effects, pair)) is not None}
                      for name, tests in self.factors.items()}
        return per_stream, audit_baseline(self.static, pair) or {}, {n: t for n, t in per_factor.items() if t}


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def factor_baseline(effects: dict[tuple[str, str], float], pair: tuple[str, str]) -> dict[str, float] | None:
    """The median effect of one global factor's swap over the audit's pairs other than ``pair`` (``effects``: pair
    -> ``global_factors.pair_effect``): {"median", "pairs"}, or None without another pair. A model that reads
    colour answers every pair's colour swap; a colour cast stands out against the audit's other pairs. Pure."""
    others = [e for key, e in effects.items() if key != pair_key(*pair)]
    if not others:
        return None
    return {"median": float(np.median(others)), "pairs": len(others)}


def audit_baseline(values: dict[str, float], pair: tuple[str, str]) -> dict[str, float] | None:
    """How the audit's classes outside ``pair`` lean on a stream: ``values`` is class -> that class's median share
    over the model's other classes. Returns {"median", "classes"} or None when no other class gave one.

    A class's own baseline (its share against every other class) cannot tell a shortcut from how the model works:
    a class the model learnt by a motion cue is told from *every* class by that cue, so its own baseline leans on
    motion as much as its margin over the partner does. The other audited classes are not touched by its cue.
    Pure."""
    others = [v for c, v in values.items() if c not in pair]
    if not others:
        return None
    return {"median": float(np.median(others)), "classes": len(others)}


def with_audit_baseline(s: PairScores, leanings: AuditLeanings | None) -> PairScores:
    """``s`` with the audit's baseline of its pair filled in (unchanged without ``leanings``). Pure."""
    if leanings is None:
        return s
    per_stream, static, per_factor = leanings.baseline_for((s.a, s.b))
    return replace(s, audit_stream_share=per_stream, audit_static_share=static, audit_factor_effect=per_factor,
                   audit_localisation_null=leanings.localisation_null_for((s.a, s.b)),
                   audit_factor_null=leanings.factor_null_for((s.a, s.b)))


def combine_pair_scores(evidence: Any, specs: Sequence[InputSpec], vis_a: SampleSet, vis_b: SampleSet,
                        *, levels_a: Sequence[int], levels_b: Sequence[int]) -> PairScores:
    """All scores of one pair from its model evidence (an ``evidence.PairEvidence``, which imports this module)
    and its two classes' visualisations. ``levels_a[i]`` is the
    kappa level of sample i of ``vis_a`` (for speed invariance). Pure."""
    a, b = evidence.a, evidence.b
    located = evidence.localisation
    total_drop = sum(max(loc.whole_stream_drop, 0.0) for loc in located.values())
    per_stream = {}
    for spec in specs:
        loc = located[spec.name]
        tmap = scores.consistent_difference_map(vis_a[spec.name], vis_b[spec.name], spec.modality)
        per_stream[spec.name] = StreamScores(
            feature_similarity=evidence.stream_feature_similarity[spec.name],
            separation_margin=(evidence.stream_evidence[a][spec.name] + evidence.stream_evidence[b][spec.name]) / 2,
            separation_share=max(loc.whole_stream_drop, 0.0) / total_drop if total_drop > 0 else 0.0,
            difference_concentration=scores.energy_concentration(tmap),
            difference_peak_xy=scores.peak_xy(tmap),
            localisation=loc,
            difference_map=tmap,
            cue_class=cue_class(vis_a, vis_b, spec, loc, (a, b)),
        )
    shares = share_baselines(evidence)
    speed: dict[str, dict[str, float]] = {}
    for cls, vis, levels in ((a, vis_a, levels_a), (b, vis_b, levels_b)):
        lv = np.asarray(levels)
        speed[cls] = {spec.name: scores.speed_invariance(
            [vis[spec.name][lv == level] for level in sorted(set(levels))], spec.modality) for spec in specs}
    return PairScores(a=a, b=b, cross_activation=evidence.cross_activation, streams=per_stream,
                      stream_reliance=evidence.stream_reliance, stream_evidence=evidence.stream_evidence,
                      motion_reliance=evidence.motion_reliance, speed_invariance=speed,
                      overall_feature_similarity=evidence.overall_feature_similarity,
                      target_softmax=evidence.target_softmax,
                      stream_share=shares.stream_share, static_share=shares.static_share,
                      global_factors=evidence.global_factors, null_localisation=list(evidence.null_localisation),
                      factor_probes=evidence.factor_probes,
                      decisiveness={cls: decisiveness(m["full"], b if cls == a else a)
                                    for cls, m in evidence.motion_margins.items()})
