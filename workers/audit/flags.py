"""Flags: the rules that turn a pair's scores into findings a reviewer should look at (DESIGN 4.4). Pure: scores
and thresholds in, a list of flags out. Thresholds live in one config object and were calibrated on the generated
benchmarks, where the planted pairs must be flagged and clean pairs must not: the reference benchmark
(tests/benchmarks/planted_quirks.py) and the calibration split of the randomised planted cases
(tests/benchmarks/planted_cases.py, re-scored under candidate thresholds by tests/benchmarks/calibrate_flags.py);
the held-out split of the cases is only ever measured (docs/planted_cases.md), and its per-code precision and
recall are shown next to each flag (``flag_rates``).

LOCALIZED_CUE reads the occlusion scan of ``analysis.localise``: the stream must matter (swapping it whole loses >=
15% of the pair's margin), swapping one window (an eighth of the frame's side) of one class's visualisations must
cost >= 2% of that class's margin, and the peak window must stand out from the strongest window elsewhere in the
frame *more than it does for this model's honest class differences*. The model's own null: the same scan on class
pairs of the audit the model is not confused on (each class of each pair against 2 other audited classes,
``ranking.null_pairs``; the scans touching the pair's own classes left out, since a class's cue stands out against
every class). The flag fires when the empirical p-value of the pair's separation against those scans is <= 0.2 (it
beats at least ~80% of them) and the separation is >= 2x; an audit with fewer than 5 such scans (too few classes; it
then makes none, ``ranking.audit_null_pairs``) falls back to the fixed cut of 3x, calibrated on seeds 0-2 of the
reference benchmark (planted windows stood out by 3.6-8.2x, no window of a pair without a planted shortcut by more
than 2.5x; docs/planted_benchmark.md). On the cases' calibration split (40 cases, re-audited with the null scans)
the null rule gave 15 of 26 local cues localised and 5 of 80 clean pairs flagged, as the fixed 3x did (p <= 0.1: 5
of 26; p <= 0.3: 16 of 26 for 7 of 80); the null scans cost about 3x the pair's own scoring
(``tests/benchmarks/scoring_cost.py``). The flag also states in how many of the class's visualisations the peak
window beats every window elsewhere, with a sign-test p-value (``analysis.peak_consistency``); a cut on it
(``localized_max_p_value``) changed no flag on the calibration split, so it is off by default. Severity: "high"
needs the window >= 6x (twice the fixed cut) and, where there is a null, an empirical p <= 0.05 against it
(``localized_severity``): a null of 7-8 scans, as a planted case's audit has, can say a window beats them all,
not that no honest pair of the model would match it. Round 11 (docs/planted_cases.md): on the calibration split
the 6x rule alone gave 6 high flags on planted pairs and 1 on a clean pair (35x, beating all 8 of its scans); with
the null's p it gives 1 and 0.

LOCALIZED_CUE also comes from the local factor probes (``local_probe_flags``, when the audit asks for probes): a
static pattern in one window of an otherwise blank RGB input (``patch``), or motion that changes from frame to
frame in one window of an otherwise still flow input (``spot``), optimised to push the model from one class to
the other (``factor_probes``). The flag fires when, in the window where the pair's lever is largest, it is >= 1.5x
the median lever of the sample's other pairs *in that window* with an empirical p <= 0.15, and the class pulls
towards that window more than the sample's classes do (p <= 0.1); ``peak_xy`` is the window's centre. Chosen on
the calibration split alone (round 13 of docs/planted_cases.md: the probes measured on its 40 cases, ad hoc):
with ``patch`` and ``spot`` these rules found 24 of its 38 local cues, put 21 of the 26 on position-keeping nets in
the right window, and flagged none of its 80 clean pairs (a class p <= 0.05: 16 of 38; <= 0.2: 24 with 4 more
wrong flags; a third probe, a window changing colour from frame to frame, found 1 more for 3 more wrong flags and
is left out). On the held-out draw 220-239 all 7 of its flags were right and none fell on a clean pair, but it found
only 1 cue nothing else found: that split draws local cues in the frame's interior, on the classes' paths, where
the other pairs answer a window as much; in a corner or along an edge, where the calibration split draws them, a
cue stands out. Not gated by decisiveness (the probes do not read the visualisations), and left out where the
occlusion scan already gave a LOCALIZED_CUE on that stream for that class.

APPEARANCE_ONLY_SEPARATION / MOTION_ONLY_SEPARATION are per class, need no position, and are relative to the
model: each stream alone (the others neutral) is run on the class's visualisations, which gives the class's margin
over its partner *and over every other class of the model* from the same evaluations. The flag fires when one
stream holds >= 75% (3:1) of the class's positive margin over its partner and that share exceeds by >= 0.25 what
the model usually gives that stream (``usual_share``): the median, over the audit's *other* classes, of each one's
median share against the model's other classes (``analysis.AuditLeanings``, ``audit_baseline``). A net that tells
every class by its motion gives no MOTION_ONLY flag: that is how it works, not a quirk of one pair. The class's own
median against the model's other classes was the baseline until 2026-12-03 and is still the fallback for an audit
with fewer than 3 other classes; it hid the shortcuts it was meant to find, because a class the model learnt by a
cue is told from *every* class by that cue (a planted camera shake: motion share 1.0 against the partner and 1.0
against the model's other classes). On the cases' calibration split the audit's other classes as the baseline
found 45 of 103 cues instead of 38 (shake 5 of 13 instead of 0) at the same thresholds, with the same 6 of 80
clean pairs flagged. With no baseline at all the absolute rule fires at low severity. A model with one moving input
(a single-stream 3D CNN) gets the same two flags from its still frames and its motion: the share of a class's
margin over its partner that survives with motion removed, against the same share over the audit's other classes.

SHARED_EVIDENCE fires when the two classes' features (centred on the neutral input's) have cosine >= 0.99, or each
class's visualisation excites the other at least as strongly as itself. The first cut (0.9, 0.5) fired on 23 of the
40 clean control pairs of the cases' calibration split -- honestly confused pairs do share evidence -- and never
names a stream, so it finds no planted cue; the cut now fires on none of them.

WEAK_VISUALISATION: a class's visualisations did not all end classified as that class (softmax < 0.5), so the
pair's other scores rest on pictures that do not show it.

GLOBAL_APPEARANCE_CUE (per RGB stream and global factor, ``global_factors``: the clip's overall colour, the frame's
border): a class's visualisations given the partner's value of that one factor lose >= 0.3 of the class's usual
margin over the model's other classes (``global_factors.swap_effect``) and >= 50% of its margin over the partner.
Named after the class holding more of the factor. The usual margin is the yardstick because honestly confused
classes have small margins over each other, of which any change is a large share. Relative to the model too: the
effect must also reach the median effect of the same swap over the audit's other pairs (``global_audit_ratio`` 1,
from ``global_min_other_pairs`` 3 other pairs; ``analysis.factor_baseline``), since a model that reads colour
answers every pair's colour swap. On the calibration split (40 cases) that ratio left found cues at 45 of 103 and
took one of the two clean pairs with a GLOBAL_APPEARANCE_CUE off (ratios 1.5: the same; 2: 43 found). The model's
own null as well (round 11, ``beats_factor_null``): the same swap, one way, on the null pairs of LOCALIZED_CUE
(audited classes against classes the audit does not confuse them with; those touching the pair's classes left out);
the class's effect must beat them with an empirical p <= 0.3 (``global_null_alpha``) when there are >= 5. A held-out
draw (cases 140-159) flagged 7 of its 40 clean pairs with GLOBAL_APPEARANCE_CUE, 6 on the single-stream 3D CNN,
whose size-confused classes lose half their margin to any colour swap. On the calibration split the null took off
both of its clean pairs' GLOBAL_APPEARANCE_CUEs for 2 of 103 cues (p <= 0.2: 3; p <= 0.1: 5), the precision of the
code rising from 26/37 to 21/27. Since round 12 that null takes every audited class a pair's class is not
audited with (``ranking.factor_null_pairs``: the swaps alone, one evaluation each, about 18 draws in a planted case's
audit instead of 7-9): on the calibration split it took one clean pair's flag off for one cue (46 to 45 of 103
found, 7 to 6 of 80 clean pairs flagged), and on two fresh held-out draws it found 1 and 2 more cues (15 against 14
of 49, 21 against 19 of 48) with the same clean pairs flagged. The same test for how a flow input moves (a
GLOBAL_MOTION_CUE) was tried again in round 12 and left out: docs/planted_cases.md.

STATIC_FACTOR_CUE / MOTION_FACTOR_CUE read the factor probes (``probe_outcomes``), which ask the model directly:
on an otherwise blank clip one factor alone (one colour over the clip, the frame border, a static background
pattern; one displacement per frame of a flow input) is optimised to push the model from one class to another,
for every ordered pair of the audited pair and up to 10 other classes. The flag fires when the pair's push is
>= 1.5x the median push of the sampled pairs sharing no class with it with an empirical p-value <= 0.15 against them
(from >= 6 such pairs), and the class it pushes to pulls towards the factor more than the sampled classes do (its
log median push as a new draw from theirs, one-sided p <= 0.05). The first test alone was chosen on the calibration
split (round 9 of docs/planted_cases.md) and flagged 4 of the 6 clean pairs of the demo's reference model, all about
the class that answers featureless input most; the second (round 10) took them off and, on the calibration split,
8 of 26 cues the probes found (16 to 12 of 49, 10 to 6 of 54; clean pairs flagged 0 of 80 either way). They are
not gated by decisiveness: they do not read the visualisations.

Every flag that points at a cue (LOCALIZED_CUE, GLOBAL_APPEARANCE_CUE, the one-stream flags, CONTEXT_CUE) passes one
more gate, relative to the model (``decisive``): the class it is about beats its partner on its own visualisations
by >= 0.5 of its median margin over the model's other classes (``analysis.decisiveness``). A shortcut is a strong
reason to tell the class from its partner, which the partner's clips lack; a pair the model honestly cannot tell
apart has evidence that barely beats the partner, and whatever window or stream then carries the small difference is
noise. CONTEXT_CUE (``context_motion_reliance``) is off by default (0): gated, it found 1 more cue of 49 on the
calibration split for 4 more clean pairs flagged of 40.

Chosen on the calibration split of the planted cases (``tests/benchmarks/calibrate_flags.py`` over min_decisiveness
0-0.6, global_min_effect 0.3-0.8, global_min_share 0.5-0.8, context_motion_reliance 0 or 0.1; docs/planted_cases.md):
without the gate 26 of 40 clean pairs got a flag, with it 2; cues found fell from 26 to 20 of 49, local cues
localised stayed 9 of 13.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from workers.audit import global_factors, probe_outcomes
from workers.audit.analysis import PairScores, stream_shares
from workers.engine.manifest import InputSpec


class FlagThresholds(BaseModel):
    """When each flag fires. See the module docstring for where the defaults come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    localized_min_stream_drop: float = Field(0.15, ge=0, le=1)
    localized_min_peak_drop: float = Field(0.02, ge=0, le=1)
    localized_separation: float = Field(3.0, ge=1)
    localized_max_p_value: float = Field(1.0, gt=0, le=1)
    localized_null_alpha: float = Field(0.2, gt=0, le=1)
    localized_null_min_scans: int = Field(5, ge=1)
    localized_null_min_separation: float = Field(2.0, ge=1)
    localized_high_alpha: float = Field(0.05, gt=0, le=1)
    only_evidence_share: float = Field(0.75, ge=0.5, le=1)
    only_share_excess: float = Field(0.25, ge=0, le=1)
    only_min_other_classes: int = Field(3, ge=1)
    shared_feature_similarity: float = Field(0.99, ge=-1, le=1)
    shared_logit_ratio: float = Field(1.0)
    context_motion_reliance: float = Field(0.0, ge=0, le=1)
    min_decisiveness: float = Field(0.5, ge=0)
    global_min_effect: float = Field(0.3, ge=0)
    global_min_share: float = Field(0.5, ge=-1, le=1)
    global_audit_ratio: float = Field(1.0, ge=0)
    global_min_other_pairs: int = Field(3, ge=1)
    global_null_alpha: float = Field(0.3, gt=0, le=1)
    global_null_min_scans: int = Field(5, ge=1)
    weak_visualisation_softmax: float = Field(0.5, ge=0, le=1)
    probe_min_ratio: float = Field(1.5, ge=0)
    probe_alpha: float = Field(0.15, gt=0, le=1)
    probe_min_null: int = Field(6, ge=1)
    probe_class_alpha: float = Field(0.05, gt=0, le=1)
    local_probe_min_ratio: float = Field(1.5, ge=0)
    local_probe_alpha: float = Field(0.15, gt=0, le=1)
    local_probe_class_alpha: float = Field(0.1, gt=0, le=1)


@dataclass(frozen=True)
class Flag:
    code: str
    stream: str | None
    severity: str          # "low" | "medium" | "high"
    message: str
    peak_xy: tuple[float, float] | None = None
    class_name: str | None = None      # the class whose evidence the flag is about, when it is one class

    def to_json(self) -> dict:
        out = asdict(self)
        out["peak_xy"] = list(self.peak_xy) if self.peak_xy is not None else None
        return out


FLAG_CODES = ("WEAK_VISUALISATION", "LOCALIZED_CUE", "GLOBAL_APPEARANCE_CUE", "STATIC_FACTOR_CUE",
              "MOTION_FACTOR_CUE", "APPEARANCE_ONLY_SEPARATION", "MOTION_ONLY_SEPARATION", "SHARED_EVIDENCE",
              "CONTEXT_CUE")
PROBE_CODES = {"static": "STATIC_FACTOR_CUE", "motion": "MOTION_FACTOR_CUE"}
FINGERPRINT_VERSION = "v1"


def flag_fingerprint(a: str, b: str, code: str, stream: str | None, class_name: str | None) -> str:
    """The identity of a finding across re-audits and releases of a model: the unordered class pair, the flag code,
    the stream and the class the flag is about -- not its score, severity, message or peak position, which move
    from one run to the next. 32 hex digits of a SHA-256 over those fields (JSON-encoded, so no separator can
    make two different findings collide). Pure."""
    key = [FINGERPRINT_VERSION, sorted((a, b)), code, stream or "", class_name or ""]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]


def _where(xy: tuple[float, float]) -> str:
    x, y = xy
    vertical = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    place = "centre" if (vertical, horizontal) == ("middle", "centre") else f"{vertical}-{horizontal}"
    return f"the {place} of the frame (x={x:.2f}, y={y:.2f})"


def dominant_stream(evidence: dict[str, float]) -> str | None:
    """The stream with the largest positive stream-alone margin of one class; None when no stream has any. Pure."""
    name, value = max(evidence.items(), key=lambda kv: kv[1])
    return name if value > 0 else None


def one_stream_classes(evidence: dict[str, dict[str, float]], min_share: float) -> dict[str, list[tuple[str, float]]]:
    """stream -> [(class, share)] for each class whose dominant stream holds >= ``min_share`` of its positive
    stream-alone margins over its partner. Pure."""
    out: dict[str, list[tuple[str, float]]] = {}
    for cls, per_stream in evidence.items():
        name = dominant_stream(per_stream)
        if name is None:
            continue
        share = stream_shares(per_stream)[name]
        if share >= min_share:
            out.setdefault(name, []).append((cls, share))
    return out


def derive_flags(s: PairScores, specs: Sequence[InputSpec], th: FlagThresholds | None = None) -> list[Flag]:
    """Flags of one pair, most specific first: each rule below in turn."""
    th = th or FlagThresholds()
    modality = {spec.name: spec.modality for spec in specs}
    cues = [*localized_cue_flags(s, modality, th), *global_cue_flags(s, th), *one_stream_flags(s, modality, th),
            *static_or_moving_flags(s, specs, th)]
    cues = [f for f in cues if decisive(s, f.class_name, th)]
    return [*weak_visualisation_flags(s, th), *cues, *local_probe_flags(s, th, cues),
            *factor_probe_flags(s, th),
            *shared_evidence_flags(s, th),
            *[f for f in context_cue_flags(s, specs, th) if decisive(s, f.class_name, th)]]


def _probe_hits(s: PairScores, th: FlagThresholds,
                local: bool) -> dict[str, list[tuple[str, probe_outcomes.ProbeOutcome]]]:
    """stream -> (probe, outcome) for each whole-frame factor probe (``local`` False) or local one (True) whose lever
    towards one class is positive, stands out against >= ``probe_min_null`` pairs of its sample (ratio to their
    median, empirical p) and whose class stands out in its pull towards the probe (class p), at the thresholds of
    its kind: ``probe_*`` or ``local_probe_*``. Pure."""
    ratio, alpha, class_alpha = ((th.local_probe_min_ratio, th.local_probe_alpha, th.local_probe_class_alpha) if local
                                 else (th.probe_min_ratio, th.probe_alpha, th.probe_class_alpha))
    hits: dict[str, list[tuple[str, probe_outcomes.ProbeOutcome]]] = {}
    for name, tests in s.factor_probes.items():
        for probe, test in tests.items():
            if (probe in probe_outcomes.LOCAL_PROBES) != local:
                continue
            o = probe_outcomes.probe_outcome(test, s.a, s.b)
            if (o.lever > 0 and o.null_size >= th.probe_min_null and o.ratio >= ratio and o.p_value <= alpha
                    and o.class_p_value <= class_alpha):
                hits.setdefault(name, []).append((probe, o))
    return hits


def factor_probe_flags(s: PairScores, th: FlagThresholds) -> list[Flag]:
    """STATIC_FACTOR_CUE / MOTION_FACTOR_CUE: one flag per stream and kind naming each whole-frame factor probe
    (``probe_outcomes``) whose lever towards one class is positive, >= ``probe_min_ratio`` times the median lever of
    the other pairs of its sample with an empirical p-value <= ``probe_alpha`` against them (from >=
    ``probe_min_null`` pairs), and whose class stands out among the sample's classes in its pull towards the factor
    (p <= ``probe_class_alpha``). Not gated by decisiveness: probes ask the model, not the visualisations. Pure."""
    flags = []
    for name, stream_hits in _probe_hits(s, th, local=False).items():
        by_kind: dict[str, list] = {}
        for probe, out in stream_hits:
            by_kind.setdefault(probe_outcomes.KIND[probe], []).append((probe, out))
        for kind, hits in by_kind.items():
            hits.sort(key=lambda h: -h[1].ratio)
            parts = [f"{probe_outcomes.DESCRIPTIONS[probe]} pushes the model from {s.partner_of(o.holder)} to "
                     f"{o.holder} by {o.lever:.3g} logits, {_times(o.ratio)} the median over {o.null_size} pairs of "
                     f"the model's other classes (empirical p = {o.p_value:.2f}), and pulls towards {o.holder} more "
                     f"than towards the model's other classes (p = {o.class_p_value:.2g} over {o.classes_size})"
                     for probe, o in hits]
            holders = sorted({o.holder for _, o in hits})
            message = (f"On an otherwise blank clip (the {name} input), " + "; ".join(parts) + ". Check whether "
                       f"{' and '.join(holders)}'s training clips differ from the partner's in that respect.")
            flags.append(Flag(PROBE_CODES[kind], name, "medium", message,
                              class_name=holders[0] if len(holders) == 1 else None))
    return flags


def local_probe_flags(s: PairScores, th: FlagThresholds, found: Sequence[Flag] = ()) -> list[Flag]:
    """LOCALIZED_CUE from the local factor probes (``probe_outcomes.LOCAL_PROBES``): per stream, the local probe
    whose one window alone pushes the model towards one class of the pair >= ``local_probe_min_ratio`` times the
    median of the sample's other pairs with an empirical p <= ``local_probe_alpha`` (from >= ``probe_min_null``
    pairs), its class pulling towards that kind of window more than the sample's classes do (p <=
    ``local_probe_class_alpha``); the window's centre is the flag's ``peak_xy``. None for a stream and class that
    ``found`` (the occlusion scan's flags) already holds a LOCALIZED_CUE for. Not gated by decisiveness: probes ask
    the model, not the visualisations. Pure."""
    flags = []
    for name, hits in _probe_hits(s, th, local=True).items():
        probe, o = max(hits, key=lambda h: h[1].ratio)
        if any(f.code == "LOCALIZED_CUE" and f.stream == name and f.class_name == o.holder for f in found):
            continue
        other = s.partner_of(o.holder)
        flags.append(Flag(
            "LOCALIZED_CUE", name, "medium",
            f"On an otherwise blank clip (the {name} input), {probe_outcomes.DESCRIPTIONS[probe]}, placed at "
            f"{_where(o.peak_xy)}, alone pushes the model from {other} to {o.holder} by {o.lever:.3g} logits, "
            f"{_times(o.ratio)} the median over {o.null_size} pairs of the model's other classes in the same window "
            f"(empirical p = {o.p_value:.2f}), and a window there pulls towards {o.holder} more than towards the "
            f"model's other classes (p = {o.class_p_value:.2g} over {o.classes_size}); check whether {o.holder}'s "
            f"training clips carry such a thing there that {other}'s lack.", o.peak_xy, class_name=o.holder))
    return flags


def _times(ratio: float) -> str:
    return "far above" if ratio == float("inf") else f"{ratio:.1f}x"


def decisive(s: PairScores, class_name: str | None, th: FlagThresholds) -> bool:
    """The gate of every flag that points at a cue: the class it is about (either class, for a flag about both)
    beats its partner by >= ``min_decisiveness`` of its usual margin over the model's other classes
    (``analysis.decisiveness``). Evidence without the figure, or a class without a baseline, passes. Pure."""
    values = [v for c, v in s.decisiveness.items() if class_name in (None, c)]
    if not s.decisiveness or th.min_decisiveness <= 0:
        return True
    return any(v is None or v >= th.min_decisiveness for v in values)


def weak_visualisation_flags(s: PairScores, th: FlagThresholds) -> list[Flag]:
    """WEAK_VISUALISATION: some of a class's visualisations end below ``weak_visualisation_softmax``."""
    weak = [(cls, p) for cls, p in s.target_softmax.items() if p < th.weak_visualisation_softmax]
    if not weak:
        return []
    return [Flag(
        "WEAK_VISUALISATION", None, "medium",
        "; ".join(f"some of {cls}'s visualisations end classified as another class (lowest softmax {p:.3f})"
                  for cls, p in weak)
        + ": the model's evidence for that class is largely another class's, and this pair's other scores and "
          "flags rest on visualisations that do not show it; weigh them accordingly.",
        class_name=weak[0][0] if len(weak) == 1 else None)]


def _consistency(loc) -> str:
    if not loc.samples:
        return ""
    return (f" (it beats every region elsewhere in {loc.peak_wins} of {loc.samples} visualisations, sign-test "
            f"p = {loc.p_value:.3f})")


def null_reaching(observed: float, null: Sequence[float | None]) -> int:
    """How many draws of the null (None: infinite) reach ``observed``. Pure."""
    return sum(1 for v in null if v is None or v >= observed)


def empirical_p_value(observed: float, null: Sequence[float | None]) -> float:
    """The empirical p-value of ``observed`` against draws of the same statistic under the null (None: infinite):
    (1 + how many draws reach it) / (1 + draws), never 0 however few draws there are. Pure."""
    return (1 + null_reaching(observed, null)) / (1 + len(null))


def against_null(observed: float, null: Sequence[float | None] | None, min_draws: int) -> tuple[float, int] | None:
    """(empirical p-value, draws beaten) of ``observed`` against the model's own null when it has ``min_draws``
    draws; None when there is no null to judge by. Pure."""
    if null is None or len(null) < min_draws:
        return None
    return empirical_p_value(observed, null), len(null) - null_reaching(observed, null)


def stands_out(separation: float, null: Sequence[float | None] | None, th: FlagThresholds) -> tuple[bool, str]:
    """Whether a peak window that holds ``separation`` times the strongest window elsewhere stands out *for this
    model*, and how to say why. With ``localized_null_min_scans`` scans of the model's own null (the same scan on
    audited classes it is not confused on, ``AuditLeanings.localisation_null_for``): its empirical p-value against
    them <= ``localized_null_alpha``, and at least ``localized_null_min_separation``. Without: the fixed
    ``localized_separation``. Pure."""
    judged = against_null(separation, null, th.localized_null_min_scans)
    if judged is not None:
        p, beaten = judged
        return (p <= th.localized_null_alpha and separation >= th.localized_null_min_separation,
                f"; it stands out more than in {beaten} of the {len(null)} scans of class pairs of this model the "
                f"audit does not confuse (empirical p = {p:.2f})")
    return separation >= th.localized_separation, ""


def localized_severity(separation: float, null: Sequence[float | None] | None, th: FlagThresholds) -> str:
    """A LOCALIZED_CUE's severity: "high" when its window stands out >= twice the fixed cut
    (``localized_separation``) and, where the audit has the model's own null (``stands_out``), with an empirical
    p-value <= ``localized_high_alpha`` against it (0.05: at least 19 scans, all of them beaten); else "medium". A
    null of a few scans can say a window beats them, not that no honest class pair of the model would match it.
    Pure."""
    if separation < 2 * th.localized_separation:
        return "medium"
    judged = against_null(separation, null, th.localized_null_min_scans)
    return "medium" if judged is not None and judged[0] > th.localized_high_alpha else "high"


def localized_cue_flags(s: PairScores, modality: dict[str, str], th: FlagThresholds) -> list[Flag]:
    """LOCALIZED_CUE per stream whose occlusion scan has one window that stands out (module docstring)."""
    flags = []
    for name, st in s.streams.items():
        loc = st.localisation
        standing_out, against_null = stands_out(loc.peak_separation, s.audit_localisation_null.get(name), th)
        if not (loc.whole_stream_drop >= th.localized_min_stream_drop and loc.peak_drop >= th.localized_min_peak_drop
                and standing_out and (not loc.samples or loc.p_value <= th.localized_max_p_value)):
            continue
        owner = st.cue_class or loc.favours  # the class whose visualisations hold something there
        other = s.partner_of(owner)
        what = "something static such as a logo, watermark or overlay" if modality[name] == "rgb" \
            else "a local movement such as a flicker, a camera artefact or a moving overlay"
        severity = localized_severity(loc.peak_separation, s.audit_localisation_null.get(name), th)
        flags.append(Flag(
            "LOCALIZED_CUE", name, severity,
            f"A small region of the {name} input at {_where(loc.peak_xy)} tells {owner} from {other}: swapping that "
            f"region alone between the two classes' visualisations costs {loc.favours} {loc.peak_drop:.0%} of its "
            f"margin over {s.partner_of(loc.favours)}, {loc.peak_separation:.1f}x any region "
            f"elsewhere{_consistency(loc)}{against_null}, and {owner}'s visualisations hold something there; check "
            "whether "
            f"{owner}'s training clips carry {what} there that {other}'s lack.", loc.peak_xy, class_name=owner))
    return flags


def global_cue_flags(s: PairScores, th: FlagThresholds) -> list[Flag]:
    """GLOBAL_APPEARANCE_CUE: one flag per RGB stream (the review key is code and stream) naming each global factor
    (``global_factors``: overall colour, frame border) whose swap for the partner's costs a class
    >= ``global_min_effect`` of its usual margin (``global_factors.swap_effect``), and at least ``global_audit_ratio``
    times the median effect of that factor over the audit's other pairs, and >= ``global_min_share`` of its margin
    over the partner (module docstring); each factor is named after the class holding more of it."""
    flags = []
    for name, tests in s.global_factors.items():
        found = []      # (effect, factor, class holding it, class that lost, its change, how it compares)
        for factor, test in tests.items():
            if factor not in global_factors.DESCRIPTIONS:
                continue        # a factor of evidence measured by another version (round 12's motion factors)
            usual = s.audit_factor_effect.get(name, {}).get(factor)
            floor = th.global_min_effect
            if usual and usual["pairs"] >= th.global_min_other_pairs:
                floor = max(floor, th.global_audit_ratio * usual["median"])
            else:
                usual = None
            null = s.audit_factor_null.get(name, {}).get(factor)
            hits = []       # (effect, class that lost, its change, how it compares with the null)
            for cls, change in test["classes"].items():
                effect = global_factors.swap_effect(change)
                if effect is None or effect < floor or change["share"] < th.global_min_share:
                    continue
                beats, beyond_null = beats_factor_null(effect, null, th)
                if beats:
                    hits.append((effect, cls, change, beyond_null))
            if hits:
                effect, loser, change, beyond_null = max(hits, key=lambda h: h[0])
                against = f"; the audit's other {usual['pairs']} pairs: {usual['median']:.0%} (median)" if usual else ""
                found.append((effect, factor, test["holder"], loser, change, against + beyond_null))
        if not found:
            continue
        parts = []
        for effect, factor, owner, loser, change, against in sorted(found, key=lambda f: -f[0]):
            partner, versus = s.partner_of(owner), s.partner_of(loser)
            parts.append(f"{global_factors.DESCRIPTIONS[factor]} tells {owner} from {partner}: giving {loser}'s "
                         f"visualisations {versus}'s {factor} alone costs {change['share']:.0%} of {loser}'s margin "
                         f"over {versus} ({effect:.0%} of its median margin over the model's other classes{against})")
        owners = sorted({f[2] for f in found})
        message = "; ".join(parts) + f" (the {name} input). Check whether {' and '.join(owners)}'s training clips " \
            "differ from the partner's in that respect (a tint, lighting or white balance; bars or an overlay " \
            "along the edges)."
        flags.append(Flag("GLOBAL_APPEARANCE_CUE", name, "medium", message[0].upper() + message[1:],
                          class_name=owners[0] if len(owners) == 1 else None))
    return flags


def beats_factor_null(effect: float, null: Sequence[float] | None, th: FlagThresholds) -> tuple[bool, str]:
    """Whether a global factor's swap effect stands out against the same swap on class pairs of this model the
    audit does not confuse (``AuditLeanings.factor_null_for``), and how to say it: with >= ``global_null_min_scans``
    such swaps its empirical p-value against them must be <= ``global_null_alpha``; with fewer there is no null
    and the test passes. A model that reads a factor everywhere answers the swap on any two classes; a cue planted
    in one class stands out against pairs without it. Pure."""
    judged = against_null(effect, null, th.global_null_min_scans)
    if judged is None:
        return True, ""
    p, beaten = judged
    return p <= th.global_null_alpha, (f"; it exceeds the same swap on {beaten} of {len(null)} class pairs of this "
                                       f"model the audit does not confuse (empirical p = {p:.2f})")


def usual_share(audit: dict | None, own: dict | None, th: FlagThresholds, what: str) -> tuple[float, str] | None:
    """The share a class's share against its partner is judged against, and how to say it: the median over the
    audit's other classes (``analysis.audit_baseline``) when it has ``only_min_other_classes`` of them, else the
    class's own median over the model's other classes (``stream_share_baseline``), else None. ``what`` names the
    share ("of their margins from motion"). Pure."""
    if audit and audit["classes"] >= th.only_min_other_classes:
        return audit["median"], (f"the audit's other {audit['classes']} classes get {audit['median']:.0%} {what} over "
                                 "the model's other classes (median)")
    if own and own.get("others_median") is not None and own["others"] >= th.only_min_other_classes:
        return own["others_median"], (f"against the model's other classes it gets {own['others_median']:.0%} {what} "
                                      f"(median of {own['others']})")
    return None


def one_stream_flags(s: PairScores, modality: dict[str, str], th: FlagThresholds) -> list[Flag]:
    """APPEARANCE_ONLY_SEPARATION / MOTION_ONLY_SEPARATION per stream that alone carries a class against its
    partner *more than the model leans on that stream elsewhere* (``usual_share``; module docstring)."""
    if len(s.streams) < 2:
        return []
    found: dict[str, list[tuple[str, float, str, bool]]] = {}   # stream -> (class, share, context, relative)
    for name, classes in one_stream_classes(s.stream_evidence, th.only_evidence_share).items():
        for cls, share in classes:
            usual = usual_share(s.audit_stream_share.get(name), s.stream_share.get(cls, {}).get(name), th,
                                f"of their margins from their {name}")
            if usual is None:
                # nothing to compare with: the absolute rule alone, at low severity
                context = ("the audit and the model have too few other classes (or this evidence predates the "
                           f"comparison) to say whether the model leans on {name} for every class")
                found.setdefault(name, []).append((cls, share, context, False))
            elif share - usual[0] >= th.only_share_excess:
                found.setdefault(name, []).append((cls, share, usual[1], True))
    flags = []
    for name, hits in found.items():
        kind = "APPEARANCE_ONLY_SEPARATION" if modality[name] == "rgb" else "MOTION_ONLY_SEPARATION"
        parts = []
        for cls, share, context, _ in hits:
            other = s.partner_of(cls)
            against = [n for n, v in s.stream_evidence[cls].items() if n != name and v < 0]
            tail = f"; its {', '.join(against)} alone even reads as {other}" if against else ""
            parts.append(f"{cls} is told from {other} by its {name} ({share:.0%} of what each stream alone "
                         f"gives it{tail}), while {context}")
        classes = [hit[0] for hit in hits]
        flags.append(Flag(
            kind, name, "medium" if all(hit[3] for hit in hits) else "low",
            "; ".join(parts) + f": look at what in {name} sets {' and '.join(classes)}'s training clips apart "
            f"from the partner's.", None, class_name=classes[0] if len(classes) == 1 else None))
    return flags


def static_or_moving_flags(s: PairScores, specs: Sequence[InputSpec], th: FlagThresholds) -> list[Flag]:
    """The one-stream flags of a model with one moving input (a single-stream 3D CNN), where the "streams" are
    the input's still part and its motion: APPEARANCE_ONLY_SEPARATION when >= ``only_evidence_share`` of a
    class's margin over its partner survives with motion removed, MOTION_ONLY_SEPARATION when <= 1 minus that
    survives; either only when the share differs from the usual one (``usual_share``) by >= ``only_share_excess``
    (module docstring)."""
    if len(specs) != 1 or specs[0].num_frames < 2:
        return []
    name = specs[0].name
    found: dict[str, list[tuple[str, str]]] = {}     # code -> (class, what was measured)
    for cls, base in s.static_share.items():
        usual = usual_share(s.audit_static_share, base, th, "of their margins with motion removed")
        if usual is None:
            continue
        share = base["partner"]
        if share >= th.only_evidence_share and share - usual[0] >= th.only_share_excess:
            code, verdict = "APPEARANCE_ONLY_SEPARATION", "its still frames tell it apart"
        elif share <= 1 - th.only_evidence_share and usual[0] - share >= th.only_share_excess:
            code, verdict = "MOTION_ONLY_SEPARATION", "only its motion tells it apart"
        else:
            continue
        other = s.partner_of(cls)
        measured = (f"{cls} keeps {share:.0%} of its margin over {other} with motion removed, while {usual[1]}: "
                    f"{verdict}")
        found.setdefault(code, []).append((cls, measured))
    flags = []
    for code, hits in found.items():
        classes, parts = [cls for cls, _ in hits], [text for _, text in hits]
        what = "still frames (a logo, a tint, a border, the background)" if code.startswith("APPEARANCE") \
            else "motion (its speed, a flicker, a blink, camera shake)"
        flags.append(Flag(code, name, "medium", "; ".join(parts) + f": look at the {what} of "
                          f"{' and '.join(classes)}'s training clips.", None,
                          class_name=classes[0] if len(classes) == 1 else None))
    return flags


def shared_evidence_flags(s: PairScores, th: FlagThresholds) -> list[Flag]:
    """SHARED_EVIDENCE: the two classes' features coincide, or each class's visualisation excites the other."""
    ratio = min(s.cross_activation["a_on_b_logit_ratio"], s.cross_activation["b_on_a_logit_ratio"])
    if s.overall_feature_similarity < th.shared_feature_similarity and ratio < th.shared_logit_ratio:
        return []
    return [Flag(
        "SHARED_EVIDENCE", None, "medium",
        f"The model's evidence for {s.a} and {s.b} largely coincides (feature similarity "
        f"{s.overall_feature_similarity:.2f}, cross-activation {ratio:.2f}): compare the two classes' clips for "
        f"what, other than the shared content, the labels could depend on.")]


def context_cue_flags(s: PairScores, specs: Sequence[InputSpec], th: FlagThresholds) -> list[Flag]:
    """CONTEXT_CUE: a class of a model with motion input keeps its score without motion. One flag per pair."""
    has_motion = any(spec.num_frames > 1 for spec in specs)
    static = [(cls, value) for cls, value in s.motion_reliance.items() if value < th.context_motion_reliance]
    if not (has_motion and static):
        return []
    # one flag per pair and stream (the review key): both classes in one message when both are static
    stream = next((spec.name for spec in specs if spec.modality == "rgb"), None)
    return [Flag(
        "CONTEXT_CUE", stream, "low",
        "; ".join(f"{cls}'s evidence does not need motion (removing it costs {value:.0%} of the class score)"
                  for cls, value in static)
        + ": the class may be recognised from scene or object context alone; look at its still frames.",
        class_name=static[0][0] if len(static) == 1 else None)]
