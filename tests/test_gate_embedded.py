"""``quirkscope gate --embedded`` on two releases of the reference model: v1 (the baseline), v2 trained with one more
planted shortcut -- the gate fails and names it -- and v2 against a baseline on which its findings were dismissed --
the gate passes. The outputs are read back as CI reads them (junitparser, the SARIF 2.1.0 schema)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from tests.reference_fixtures import GATE_AUDIT
from tests.test_gate_outputs_config import sarif_schema

pytestmark = pytest.mark.slow


def gate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["gate", "--embedded", "--device", "cpu", *GATE_AUDIT, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_embedded_gate_fails_on_the_new_planted_shortcut_and_passes_once_dismissed(capsys, tmp_path: Path,
                                                                                    releases, monkeypatch) -> None:
    import jsonschema
    from junitparser import Failure, JUnitXml

    monkeypatch.chdir(tmp_path)  # no quirkscope.toml here: the default rules
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (v1_bundle, v1_confusion), (v2_bundle, v2_confusion) = releases["v1"], releases["v2"]
    extra = releases["extra"]

    # v1, the first release: no baseline, every finding is new; warn instead of failing
    code, out, err = gate(capsys, "--model", str(v1_bundle), "--confusion", str(v1_confusion), "--baseline", "none",
                          "--rule", "new_findings=warn", "--report", str(tmp_path / "v1"))
    assert code == 0, out + err
    assert "baseline: none" in out and "gate PASSED" in out and "WARN  new_findings" in out
    v1_report = json.loads((tmp_path / "v1" / "report.json").read_text())
    assert (tmp_path / "v1" / "index.html").is_file()

    # v2 against v1: the extra shortcut is a new finding that fails the gate, named on one line
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    code, out, err = gate(capsys, "--model", str(v2_bundle), "--confusion", str(v2_confusion),
                          "--baseline", str(tmp_path / "v1" / "report.json"), "--report", str(tmp_path / "v2"),
                          "--junit", str(tmp_path / "junit.xml"), "--sarif", str(tmp_path / "gate.sarif"),
                          "--json", str(tmp_path / "gate.json"))
    assert code == 1, out + err
    doc = json.loads((tmp_path / "gate.json").read_text())
    assert doc["decision"] == "failed" and doc["baseline"]["model"]["version"] == v1_report["audit"]["model"]["version"]
    planted = [f for f in doc["failures"] if f["code"] == "LOCALIZED_CUE" and f["stream"] == extra.stream
               and extra.class_name in (f["a"], f["b"]) and f"about {extra.class_name}" in f["message"]]
    assert planted, doc["failures"]
    found = {f["fingerprint"]: f for f in doc["comparison"]["findings"]["new"]}
    assert extra.contains(tuple(found[planted[0]["fingerprint"]]["peak_xy"]))  # where it was planted
    assert f"FAIL  new_findings: {planted[0]['message']}" in out and "gate FAILED" in out

    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
    failures = [r for case in suite for r in case.result if isinstance(r, Failure)]
    assert any(planted[0]["message"] == f.message for f in failures)
    sarif = json.loads((tmp_path / "gate.sarif").read_text())
    jsonschema.Draft7Validator(sarif_schema()).validate(sarif)
    assert {r["baselineState"] for r in sarif["runs"][0]["results"]} <= {"new", "unchanged", "updated", "absent"}
    assert step_summary.read_text().startswith("## QuirkScope gate FAILED")

    # a reviewer dismissed v2's findings on the baseline: the same audit of v2 now passes, cues included
    baseline = json.loads((tmp_path / "v2" / "report.json").read_text())
    for pair in baseline["pairs"]:
        for flag in pair["flags"]:
            flag["review"] = {"verdict": "dismissed", "note": "planted on purpose", "by": "reviewer"}
    (tmp_path / "dismissed.json").write_text(json.dumps(baseline))
    code, out, err = gate(capsys, "--model", str(v2_bundle), "--confusion", str(v2_confusion),
                          "--baseline", str(tmp_path / "dismissed.json"), "--rule", "localized_cue=fail",
                          "--json", str(tmp_path / "again.json"))
    assert code == 0, out + err
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["comparison"]["counts"]["new"] == 0 and again["failures"] == []
    assert all(f["decision"]["verdict"] == "dismissed" for f in again["comparison"]["findings"]["persisting"])
