"""Scores an audit's flags against the planted truth of the generated cases (workers/engine/reference/cases.py):
pure functions over flag records and ``Cue`` objects, shared by tests/benchmarks/planted_cases.py and its tests.

Definitions (issue 11):

- a flag is **about** a cue when its ``class_name`` is None or the cue's class, it names the cue's stream
  (``flag.stream == cue.stream``), and, for the codes that say what kind of evidence they saw (``CODE_KIND``:
  APPEARANCE_ONLY_SEPARATION and CONTEXT_CUE static, MOTION_ONLY_SEPARATION motion), that kind is the cue's. On
  two-stream nets the stream already implies the kind; on the single-stream c3d_single every flag names ``clip``,
  and the kind is what tells a still-frame finding from a motion one;
- a planted cue is **found** when a flag is about it; flags that name no stream (WEAK_VISUALISATION,
  SHARED_EVIDENCE) never find one; it is **found as expected** when one of the codes ``EXPECTED_CODES`` expects of
  it finds it;
- it is **localised** (local cues on position-keeping models only: twostream_flatten, c3d_single) when a
  LOCALIZED_CUE on its stream has a ``peak_xy`` within one window side (1/8 of the frame side) of its region, in x
  and in y (Chebyshev distance from the region box);
- on a clean pair every flag but WEAK_VISUALISATION is false;
- per flag code, ``precision`` = correct / fired, where a flag is correct when it is on a planted pair and about
  its cue (so a stream-less flag is never correct, and every flag on a clean pair is wrong); ``recall`` = cues this
  code found / cues for which ``EXPECTED_CODES`` expects this code. WEAK_VISUALISATION is a note on the
  visualisations, not a finding, and is left out of the rates.

Expected codes: LOCALIZED_CUE for local cues (logo, flicker, blink) on position-keeping models; GLOBAL_APPEARANCE_CUE
for colour casts and borders on every architecture; the one-stream code
of the cue's kind (APPEARANCE_ONLY_SEPARATION for static cues, MOTION_ONLY_SEPARATION for motion cues) on every
architecture (a single-stream net gets them from its still frames and its motion); CONTEXT_CUE for background;
STATIC_FACTOR_CUE for colour casts, borders and backgrounds on every architecture, and MOTION_FACTOR_CUE for camera
shake on the two-stream nets (the factor probes, ``workers.audit.factor_probes``: a c3d_single has no flow input to
probe).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from workers.engine.reference.cases import (
    ARCHITECTURES,
    FAMILIES,
    LOCAL_FAMILIES,
    MOTION_FAMILIES,
    POSITION_KEEPING,
    SIZE,
    STATIC_FAMILIES,
    Cue,
)

WINDOW_FRACTION = 1 / 8
GLOBAL_STATIC_FAMILIES = ("colour_cast", "border")     # what the global factors colour and border test
TWO_STREAM = tuple(a for a in ARCHITECTURES if a.startswith("twostream"))   # the nets with a flow input
NOT_A_FINDING = "WEAK_VISUALISATION"

# Which flag code each cue should raise: (code, cue families, architectures). A cue expects every code whose row
# holds both its family and its case's architecture.
EXPECTED_CODES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("LOCALIZED_CUE", LOCAL_FAMILIES, POSITION_KEEPING),
    ("GLOBAL_APPEARANCE_CUE", GLOBAL_STATIC_FAMILIES, ARCHITECTURES),
    ("APPEARANCE_ONLY_SEPARATION", STATIC_FAMILIES, ARCHITECTURES),
    ("MOTION_ONLY_SEPARATION", MOTION_FAMILIES, ARCHITECTURES),
    ("CONTEXT_CUE", ("background",), ARCHITECTURES),
    ("STATIC_FACTOR_CUE", ("colour_cast", "border", "background"), ARCHITECTURES),
    ("MOTION_FACTOR_CUE", ("shake",), TWO_STREAM),
)
# The kind of evidence (a cue's ``kind``) a code reports, for the codes that say.
CODE_KIND = {"APPEARANCE_ONLY_SEPARATION": "static", "CONTEXT_CUE": "static", "MOTION_ONLY_SEPARATION": "motion",
             "GLOBAL_APPEARANCE_CUE": "static", "STATIC_FACTOR_CUE": "static", "MOTION_FACTOR_CUE": "motion"}


class FlagLike(Protocol):
    code: str
    stream: str | None
    severity: str
    peak_xy: tuple[float, float] | None
    class_name: str | None


@dataclass(frozen=True)
class FlagRecord:
    """The fields of ``workers.audit.flags.Flag`` the scoring reads (and a flag's JSON holds)."""

    code: str
    stream: str | None
    severity: str
    peak_xy: tuple[float, float] | None = None
    class_name: str | None = None

    @staticmethod
    def of(flag: FlagLike | dict[str, Any]) -> "FlagRecord":
        get = flag.get if isinstance(flag, dict) else lambda k: getattr(flag, k)
        peak = get("peak_xy")
        return FlagRecord(get("code"), get("stream"), get("severity"),
                          tuple(peak) if peak is not None else None, get("class_name"))


@dataclass(frozen=True)
class PairOutcome:
    """One audited pair of one case: its cue (None for a clean control pair) and the flags the audit raised."""

    case_id: str
    architecture: str
    a: str
    b: str
    cue: Cue | None
    flags: tuple[FlagRecord, ...]


def expected_codes(cue: Cue, architecture: str) -> list[str]:
    """The codes ``EXPECTED_CODES`` expects of ``cue`` on ``architecture``."""
    return [code for code, families, archs in EXPECTED_CODES if cue.family in families and architecture in archs]


def about_cue(flag: FlagLike, cue: Cue) -> bool:
    """The flag is about the cue's class (or both classes), names the cue's stream, and reports the cue's kind
    of evidence when its code says one (``CODE_KIND``)."""
    return (flag.stream is not None and flag.stream == cue.stream and flag.class_name in (None, cue.class_name)
            and CODE_KIND.get(flag.code, cue.kind) == cue.kind)


def cue_found(flags: Iterable[FlagLike], cue: Cue, code: str | None = None) -> bool:
    """Some flag (of ``code``, when given) is about ``cue``."""
    return any(about_cue(f, cue) for f in flags if code is None or f.code == code)


def cue_found_as_expected(flags: Sequence[FlagLike], cue: Cue, architecture: str) -> bool:
    """One of the codes expected of ``cue`` on ``architecture`` finds it."""
    return any(cue_found(flags, cue, code) for code in expected_codes(cue, architecture))


def peak_near_region(peak_xy: Sequence[float], region: tuple[int, int, int, int], size: int = SIZE,
                     window: float = WINDOW_FRACTION) -> bool:
    """Whether a normalised (x, y) lies within ``window`` (normalised) of the pixel ``region`` (x0, y0, x1, y1,
    end-exclusive) in both x and y."""
    x0, y0, x1, y1 = (v / size for v in region)
    x, y = peak_xy
    return x0 - window <= x <= x1 + window and y0 - window <= y <= y1 + window


def localisation_applies(cue: Cue, architecture: str) -> bool:
    return cue.local and architecture in POSITION_KEEPING


def cue_localised(flags: Iterable[FlagLike], cue: Cue, architecture: str) -> bool | None:
    """A LOCALIZED_CUE on the cue's stream peaks near its region; None where localisation does not apply."""
    if not localisation_applies(cue, architecture):
        return None
    return any(f.code == "LOCALIZED_CUE" and f.stream == cue.stream and f.peak_xy is not None
               and peak_near_region(f.peak_xy, cue.region) for f in flags)


def false_flags(flags: Iterable[FlagLike]) -> list[FlagLike]:
    """The flags of a clean pair that count as false: all but WEAK_VISUALISATION."""
    return [f for f in flags if f.code != NOT_A_FINDING]


def flag_correct(flag: FlagLike, cue: Cue | None) -> bool:
    """A flag of a pair whose cue is ``cue`` (None: a clean pair) is correct when it is about that cue."""
    return cue is not None and about_cue(flag, cue)


def code_rates(outcomes: Sequence[PairOutcome]) -> dict[str, dict[str, float | int | None]]:
    """Per flag code (WEAK_VISUALISATION aside; every code that fired or was expected): precision, recall, fired,
    correct, expected, found. precision is None when the code never fired, recall None when it was never expected."""
    fired: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for o in outcomes:
        for f in o.flags:
            if f.code != NOT_A_FINDING:
                fired[f.code] += 1
                correct[f.code] += flag_correct(f, o.cue)
        if o.cue is not None:
            for code in expected_codes(o.cue, o.architecture):
                expected[code] += 1
                found[code] += cue_found(o.flags, o.cue, code)
    return {code: {"precision": correct[code] / fired[code] if fired[code] else None,
                   "recall": found[code] / expected[code] if expected[code] else None,
                   "fired": fired[code], "correct": correct[code], "expected": expected[code], "found": found[code]}
            for code in sorted(set(fired) | set(expected))}


def family_recall(outcomes: Sequence[PairOutcome]) -> dict[str, dict[str, int]]:
    """Per cue family: planted pairs (``total``), cues ``found``, cues found by an expected code (``as_expected``,
    out of ``expected_total`` cues that expect any code), and of the cues where localisation applies
    (``local_total``) how many were ``localised``."""
    out = {f: {"total": 0, "found": 0, "expected_total": 0, "as_expected": 0, "local_total": 0, "localised": 0}
           for f in FAMILIES}
    for o in outcomes:
        if o.cue is None:
            continue
        row = out[o.cue.family]
        row["total"] += 1
        row["found"] += cue_found(o.flags, o.cue)
        if expected_codes(o.cue, o.architecture):
            row["expected_total"] += 1
            row["as_expected"] += cue_found_as_expected(o.flags, o.cue, o.architecture)
        localised = cue_localised(o.flags, o.cue, o.architecture)
        if localised is not None:
            row["local_total"] += 1
            row["localised"] += localised
    return out


def code_family_table(outcomes: Sequence[PairOutcome]) -> dict[str, dict[str, dict[str, int]]]:
    """code -> family -> {total planted pairs of the family, ``any``: pairs where the code fired at all, ``right``:
    pairs where it fired about the cue (its class, its stream)}."""
    totals = Counter(o.cue.family for o in outcomes if o.cue is not None)
    codes = sorted({f.code for o in outcomes for f in o.flags})
    table = {code: {fam: {"total": totals[fam], "any": 0, "right": 0} for fam in FAMILIES} for code in codes}
    for o in outcomes:
        if o.cue is None:
            continue
        for code in {f.code for f in o.flags}:
            table[code][o.cue.family]["any"] += 1
            table[code][o.cue.family]["right"] += cue_found(o.flags, o.cue, code)
    return table


def clean_pair_flags(outcomes: Sequence[PairOutcome]) -> dict[str, Any]:
    """Over the clean control pairs: how many, false flags per code, and how many of those are high-severity."""
    clean = [o for o in outcomes if o.cue is None]
    per_code = Counter(f.code for o in clean for f in false_flags(o.flags))
    high = sum(f.severity == "high" for o in clean for f in false_flags(o.flags))
    return {"pairs": len(clean), "per_code": dict(sorted(per_code.items())), "high": high,
            "pairs_with_any": sum(bool(false_flags(o.flags)) for o in clean)}


def outcome_of_row(row: dict[str, Any], flags: Iterable[FlagLike | dict[str, Any]] | None = None) -> PairOutcome:
    """The ``PairOutcome`` of one row the benchmark writes, with its own flags or with ``flags`` (the same pair's
    flags derived again, e.g. under other thresholds)."""
    return PairOutcome(row["case_id"], row["architecture"], row["a"], row["b"],
                       Cue.from_json(row["cue"]) if row["cue"] else None,
                       tuple(FlagRecord.of(f) for f in (row["flags"] if flags is None else flags)))


def totals(outcomes: Sequence[PairOutcome]) -> dict[str, Any]:
    """The benchmark's bottom line, every case counted: cues found, found by an expected code, localised, and
    clean pairs with any false flag and with a high-severity one (with the false flags per code)."""
    recall = family_recall(outcomes)
    clean = clean_pair_flags(outcomes)
    return {"found": sum(r["found"] for r in recall.values()), "cues": sum(r["total"] for r in recall.values()),
            "as_expected": sum(r["as_expected"] for r in recall.values()),
            "expected": sum(r["expected_total"] for r in recall.values()),
            "localised": sum(r["localised"] for r in recall.values()),
            "local": sum(r["local_total"] for r in recall.values()),
            "clean_any": clean["pairs_with_any"], "clean_high": clean["high"], "clean": clean["pairs"],
            "clean_per_code": clean["per_code"]}
