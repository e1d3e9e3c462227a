"""The flag rules on the recorded scores of real trained models (seconds, no model run): for each cue family one
planted pair of the planted-case benchmark's *calibration* split whose cue the rules find by an expected code, and
one clean control pair per architecture, which must get no high-severity flag. The scores in
``tests/data/planted_case_scores.json`` were measured by ``tests/benchmarks/planted_cases.py --split calibration``
(128 steps, cases 0-39) and chosen by ``tests/benchmarks/record_case_scores.py`` (the first found cue of each family,
the first clean pair of each architecture without a flag, and for each local cue family the first pair the local
factor probes alone put in the right window); a rule change that loses one of these cues, or raises a high flag on a
clean pair, fails here before it reaches the benchmark. The one-stream flags compare a class with
the audit's other classes (``analysis.AuditLeanings``): each row's scores carry the audit baseline its case's rows
give it. Every family has a row: each is found on at least one calibration pair (speed on 1 of 13,
docs/planted_cases.md)."""
import json
from pathlib import Path

import pytest

from workers.audit.analysis import PairScores
from workers.audit.flags import Flag, FlagThresholds, derive_flags, local_probe_flags
from workers.engine.manifest import InputSpec
from workers.engine.reference import cases, scoring

RECORDED = json.loads((Path(__file__).parent / "data" / "planted_case_scores.json").read_text())


def _flags(row):
    inputs = [InputSpec.model_validate(i) for i in row["inputs"]]
    return derive_flags(PairScores.from_json(row["scores"], row["a"], row["b"]), inputs)


@pytest.mark.parametrize("row", RECORDED["planted"], ids=lambda r: f"{r['cue']['family']}-{r['architecture']}")
def test_the_planted_cue_is_found_by_an_expected_code(row):
    cue = cases.Cue.from_json(row["cue"])
    flags = _flags(row)
    assert scoring.cue_found_as_expected(flags, cue, row["architecture"]), [f.code for f in flags]
    if scoring.localisation_applies(cue, row["architecture"]):
        assert scoring.cue_localised(flags, cue, row["architecture"]), [(f.code, f.peak_xy) for f in flags]


@pytest.mark.parametrize("row", RECORDED["local_probe"], ids=lambda r: f"{r['cue']['family']}-{r['architecture']}")
def test_the_local_probes_alone_put_a_local_cue_in_its_window(row):
    cue = cases.Cue.from_json(row["cue"])
    flags = local_probe_flags(PairScores.from_json(row["scores"], row["a"], row["b"]), FlagThresholds())
    assert scoring.cue_localised(flags, cue, row["architecture"]), [(f.code, f.peak_xy) for f in flags]


@pytest.mark.parametrize("row", RECORDED["clean"], ids=lambda r: r["architecture"])
def test_a_clean_control_pair_gets_no_high_severity_flag(row):
    assert not [f for f in _flags(row) if f.severity == "high"]


def test_the_recorded_rows_cover_every_family_and_every_architecture():
    assert {r["cue"]["family"] for r in RECORDED["planted"]} == set(cases.FAMILIES)
    assert {r["architecture"] for r in RECORDED["clean"]} == set(cases.ARCHITECTURES)
    assert {r["cue"]["family"] for r in RECORDED["local_probe"]} == set(cases.LOCAL_FAMILIES)


def test_stored_rows_get_the_audit_baseline_of_their_own_case_only():
    from tests.benchmarks.planted_cases import stored_scores
    rows = [r for r in RECORDED["planted"] if r["case_id"] == "calibration-000"]
    assert len(rows) == 3
    together = stored_scores(rows)
    assert all(s.audit_stream_share["motion"]["classes"] == 4 for s in together)
    apart = stored_scores([{**rows[0], "case_id": "calibration-099"}, *rows[1:]])
    assert apart[0].audit_stream_share == {} and apart[1].audit_stream_share["motion"]["classes"] == 2


def test_replicated_keeps_the_flags_the_second_pictures_repeat_by_code_stream_and_class():
    from tests.benchmarks.planted_cases import replicated

    cue = Flag("LOCALIZED_CUE", "appearance", "medium", "m", (0.1, 0.2), class_name="A")
    other_class = Flag("LOCALIZED_CUE", "appearance", "high", "other figures", (0.5, 0.5), class_name="B")
    motion = Flag("MOTION_ONLY_SEPARATION", "motion", "medium", "m", class_name="A")
    weak = Flag("WEAK_VISUALISATION", None, "medium", "m", class_name="A")
    second = [Flag("LOCALIZED_CUE", "appearance", "high", "its own figures", (0.9, 0.9), class_name="A"),
              Flag("MOTION_ONLY_SEPARATION", "appearance", "medium", "m", class_name="A")]
    assert replicated([cue, other_class, motion, weak], second) == [cue, weak]   # the first set's figures are kept
    assert replicated([cue, motion], []) == []
