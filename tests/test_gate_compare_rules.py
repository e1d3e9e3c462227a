"""Finding identity, the comparison of two audits, and the gate's rules: pure functions on report dicts."""
from __future__ import annotations

import pytest

from tests.gate_fixtures import flag, pair, report, v1_v2
from workers.audit.compare import compare_reports, ensure_same_model, with_decisions
from workers.audit.flags import flag_fingerprint
from workers.audit.gate_rules import GateRules, confusion_rates, evaluate_gate
from workers.engine.errors import InvalidInput


def test_fingerprint_ignores_pair_order_score_and_position_but_not_code_stream_or_class() -> None:
    fp = flag_fingerprint("A", "B", "LOCALIZED_CUE", "appearance", "A")
    assert fp == flag_fingerprint("B", "A", "LOCALIZED_CUE", "appearance", "A") and len(fp) == 32
    assert fp != flag_fingerprint("A", "B", "LOCALIZED_CUE", "motion", "A")
    assert fp != flag_fingerprint("A", "B", "LOCALIZED_CUE", "appearance", "B")
    assert fp != flag_fingerprint("A", "B", "CONTEXT_CUE", "appearance", "A")
    assert fp != flag_fingerprint("A", "C", "LOCALIZED_CUE", "appearance", "A")
    assert flag_fingerprint("A", "B", "SHARED_EVIDENCE", None, None) == flag_fingerprint("A", "B", "SHARED_EVIDENCE",
                                                                                          "", "")


def test_pipeline_report_flags_carry_their_fingerprint() -> None:
    from workers.audit.flags import Flag
    from workers.audit.pipeline import PairResult, pair_entry
    from workers.audit.ranking import RankedPair

    ranked = RankedPair(a="A", b="B", rank=1, a_as_b=0.2, b_as_a=0.1, count_ab=2, count_ba=1, confusion=0.3,
                        explicit=False)
    result = PairResult(pair=ranked, scores=type("S", (), {"to_json": lambda self: {}})(),
                        flags=[Flag("LOCALIZED_CUE", "motion", "high", "m", (0.5, 0.5), "B")])
    entry = pair_entry(result, {}, {})
    assert entry["flags"][0]["fingerprint"] == flag_fingerprint("B", "A", "LOCALIZED_CUE", "motion", "B")


def test_comparison_splits_pairs_and_findings_by_identity() -> None:
    v1, v2 = v1_v2()
    cmp = compare_reports(v2, v1)
    assert [(p["a"], p["b"]) for p in cmp["pairs"]["new"]] == [("Archery", "Cycling")]
    assert [(p["a"], p["b"]) for p in cmp["pairs"]["gone"]] == [("Cycling", "Diving")]
    assert [(p["a"], p["b"]) for p in cmp["pairs"]["persisting"]] == [("Bowling", "Archery")]
    assert [f["code"] for f in cmp["findings"]["new"]] == ["MOTION_ONLY_SEPARATION"]
    assert [f["code"] for f in cmp["findings"]["persisting"]] == ["LOCALIZED_CUE"]
    assert [f["code"] for f in cmp["findings"]["absent"]] == ["SHARED_EVIDENCE"]
    assert cmp["findings"]["persisting"][0]["baseline_state"] == "unchanged"
    assert cmp["counts"] == {"new": 1, "persisting": 1, "absent": 1}
    assert cmp["candidate"]["model"]["version"] == "2" and cmp["baseline"]["model"]["version"] == "1"


def test_without_a_baseline_everything_is_new() -> None:
    _, v2 = v1_v2()
    cmp = compare_reports(v2, None)
    assert cmp["baseline"] is None and cmp["counts"] == {"new": 2, "persisting": 0, "absent": 0}
    assert len(cmp["pairs"]["new"]) == 2 and cmp["pairs"]["gone"] == []


def test_a_finding_about_the_other_class_is_a_different_finding() -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("LOCALIZED_CUE", class_name="A")])])
    v2 = report("2", [pair("A", "B", 1, [flag("LOCALIZED_CUE", class_name="B")])])
    cmp = compare_reports(v2, v1)
    assert cmp["counts"] == {"new": 1, "persisting": 0, "absent": 1}


@pytest.mark.parametrize("verdict, before, after, decided, reopened", [
    ("dismissed", "medium", "medium", "dismissed", False),
    ("dismissed", "medium", "low", "dismissed", False),
    ("dismissed", "medium", "high", None, True),          # severity rose: undecided again
    ("confirmed", "medium", "high", "confirmed", False),
    ("confirmed", "high", "low", "confirmed", False),
    ("needs-data", "low", "low", "needs-data", False),
])
def test_baseline_decisions_carry_over(verdict, before, after, decided, reopened) -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("LOCALIZED_CUE", severity=before, review=verdict, note="n")])])
    v2 = report("2", [pair("A", "B", 1, [flag("LOCALIZED_CUE", severity=after)])])
    finding = compare_reports(v2, v1)["findings"]["persisting"][0]
    assert (finding["decision"] or {}).get("verdict") == decided and finding["reopened"] is reopened
    assert finding["baseline_state"] == ("unchanged" if before == after else "updated")
    if decided:
        assert finding["decision"]["source"] == "baseline" and finding["decision"]["note"] == "n"


def test_own_review_beats_the_carried_one() -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("LOCALIZED_CUE", review="dismissed")])])
    v2 = report("2", [pair("A", "B", 1, [flag("LOCALIZED_CUE", review="confirmed")])])
    decision = compare_reports(v2, v1)["findings"]["persisting"][0]["decision"]
    assert decision["verdict"] == "confirmed" and decision["source"] == "candidate"


def test_decisions_follow_a_finding_through_several_releases() -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("LOCALIZED_CUE", review="dismissed")])], audit_id=1)
    v2 = report("2", [pair("A", "B", 1, [flag("LOCALIZED_CUE")])], audit_id=2)
    v3 = report("3", [pair("A", "B", 1, [flag("LOCALIZED_CUE")])], audit_id=3)
    v2_decided = with_decisions(v2, compare_reports(v2, v1))  # what `gate --report` writes as the next baseline
    finding = compare_reports(v3, v2_decided)["findings"]["persisting"][0]
    assert finding["decision"]["verdict"] == "dismissed"


def test_baseline_of_another_model_is_refused() -> None:
    _, v2 = v1_v2()
    with pytest.raises(InvalidInput, match="model 'other'"):
        ensure_same_model(v2, report("9", [], name="other"))


def _failed(outcome) -> list[tuple[str, str | None]]:
    return sorted((r.rule, r.code) for r in outcome.failures)


def test_new_findings_rule_counts_new_findings_at_or_above_the_severity() -> None:
    v1, v2 = v1_v2()
    rules = GateRules()
    outcome = evaluate_gate(compare_reports(v2, v1), v2, rules)
    assert not outcome.passed and _failed(outcome) == [("new_findings", "MOTION_ONLY_SEPARATION")]
    assert ("new finding: MOTION_ONLY_SEPARATION[motion] on Archery/Cycling (medium, about Cycling)"
            in outcome.failures[0].message)
    high = GateRules.model_validate({"new_findings": {"min_severity": "high"}})
    assert evaluate_gate(compare_reports(v2, v1), v2, high).passed
    only_cues = GateRules.model_validate({"new_findings": {"codes": ["LOCALIZED_CUE", "SHARED_EVIDENCE"]}})
    assert evaluate_gate(compare_reports(v2, v1), v2, only_cues).passed
    with pytest.raises(ValueError, match="unknown flag code 'NOPE'"):
        GateRules.model_validate({"new_findings": {"codes": ["NOPE"]}})
    warn = GateRules.model_validate({"new_findings": "warn"})
    outcome = evaluate_gate(compare_reports(v2, v1), v2, warn)
    assert outcome.passed and [r.rule for r in outcome.warnings] == ["new_findings", "localized_cue"]


def test_a_new_finding_dismissed_on_the_candidate_passes() -> None:
    v1, v2 = v1_v2()
    v2["pairs"][1]["flags"][0]["review"] = {"verdict": "dismissed", "note": "expected"}
    assert evaluate_gate(compare_reports(v2, v1), v2, GateRules()).passed


def test_confirmed_findings_rule_fails_while_the_finding_is_raised() -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("SHARED_EVIDENCE", None, class_name=None, review="confirmed")])])
    v2 = report("2", [pair("A", "B", 1, [flag("SHARED_EVIDENCE", None, class_name=None)])])
    outcome = evaluate_gate(compare_reports(v2, v1), v2, GateRules())
    assert _failed(outcome) == [("confirmed_findings", "SHARED_EVIDENCE")]
    assert "confirmed by alice is still raised" in outcome.failures[0].message
    fixed = report("3", [pair("A", "B", 1, [])])
    assert evaluate_gate(compare_reports(fixed, v1), fixed, GateRules()).passed


def test_localized_cue_rule_fires_on_persisting_cues_unless_dismissed() -> None:
    v1 = report("1", [pair("A", "B", 1, [flag("LOCALIZED_CUE")])])
    v2 = report("2", [pair("A", "B", 1, [flag("LOCALIZED_CUE")])])
    rules = GateRules.model_validate({"localized_cue": "fail"})
    assert _failed(evaluate_gate(compare_reports(v2, v1), v2, rules)) == [("localized_cue", "LOCALIZED_CUE")]
    v1["pairs"][0]["flags"][0]["review"] = {"verdict": "dismissed"}
    assert evaluate_gate(compare_reports(v2, v1), v2, rules).passed


def test_confusion_rate_rule_checks_every_pair_of_the_matrix() -> None:
    assert confusion_rates({"classes": ["A", "B"], "matrix": [[6, 4], [1, 9]]}) == [("A", "B", 0.4)]
    _, v2 = v1_v2()
    rules = GateRules.model_validate({"confusion_rate": {"action": "fail", "max": 0.25}, "new_findings": "off"})
    outcome = evaluate_gate(compare_reports(v2, None), v2, rules)
    assert [(r.a, r.b) for r in outcome.failures] == [("Archery", "Bowling")]
    assert "confusion rate 30% > 25% between Archery and Bowling" == outcome.failures[0].message
    assert evaluate_gate(compare_reports(v2, None), v2, rules.model_copy(
        update={"confusion_rate": rules.confusion_rate.model_copy(update={"max": 0.3})})).passed


def test_rules_off_find_nothing() -> None:
    v1, v2 = v1_v2()
    rules = GateRules.model_validate({name: "off" for name in GateRules.model_fields})
    outcome = evaluate_gate(compare_reports(v2, v1), v2, rules)
    assert outcome.passed and outcome.results == []
