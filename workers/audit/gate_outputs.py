"""What a release gate writes for CI systems to show without glue, from the comparison (``workers.audit.compare``)
and the gate's outcome (``workers.audit.gate_rules``): a JSON document, a JUnit XML file (one test case per audited
pair, a failure per finding that fails the gate, warnings as system-out), a Markdown summary (a job page or a
pull-request comment) and a SARIF 2.1.0 log (fingerprints and baselineState, for code-scanning UIs). Pure: strings
and dicts out; the CLI writes them."""
from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Mapping, Sequence

from workers.audit.compare import candidate_findings, pair_key
from workers.audit.gate_rules import GateOutcome, RuleResult, finding_label

TOOL_NAME = "QuirkScope"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "quirkscopeFinding/v1"
FLAG_DESCRIPTIONS = {
    "LOCALIZED_CUE": "The difference between two confused classes sits in a small region of one stream.",
    "GLOBAL_APPEARANCE_CUE": "A property of the whole frame (overall colour, the border) tells two confused "
                             "classes apart.",
    "STATIC_FACTOR_CUE": "One static property of the whole clip alone (a colour, the border, a background "
                         "pattern) moves the model from one confused class to the other far more than it moves "
                         "the model's other class pairs, and pulls towards that class more than towards the "
                         "model's other classes.",
    "MOTION_FACTOR_CUE": "Whole-frame motion alone (camera motion) moves the model from one confused class to the "
                         "other far more than it moves the model's other class pairs, and pulls towards that class "
                         "more than towards the model's other classes.",
    "APPEARANCE_ONLY_SEPARATION": "A class is told from its partner by its appearance stream alone.",
    "MOTION_ONLY_SEPARATION": "A class is told from its partner by its motion stream alone.",
    "SHARED_EVIDENCE": "The model's evidence for two confused classes largely coincides.",
    "CONTEXT_CUE": "A class's evidence does not need motion: it may be recognised from context alone.",
    "WEAK_VISUALISATION": "A class's visualisations do not end classified as that class.",
}


def _model_line(ref: Mapping[str, Any] | None) -> str:
    if not ref:
        return "none (every finding is new)"
    model = ref.get("model") or {}
    return f"audit {ref.get('id')} of {model.get('name')} {model.get('version')}"


def gate_document(comparison: Mapping[str, Any], outcome: GateOutcome, *, exit_code: int,
                  report_url: str | None = None) -> dict[str, Any]:
    """The ``--json`` document: the decision, what failed and warned, and the whole comparison."""
    return {"decision": "passed" if outcome.passed else "failed", "exit_code": exit_code, "report_url": report_url,
            "candidate": comparison["candidate"], "baseline": comparison["baseline"],
            "rules": outcome.rules.model_dump(mode="json"),
            "failures": [r.to_json() for r in outcome.failures], "warnings": [r.to_json() for r in outcome.warnings],
            "comparison": comparison}


def _results_by_pair(results: Sequence[RuleResult]) -> dict[tuple[str, str], list[RuleResult]]:
    out: dict[tuple[str, str], list[RuleResult]] = {}
    for r in results:
        out.setdefault(pair_key(r.a, r.b), []).append(r)
    return out


def junit_xml(comparison: Mapping[str, Any], outcome: GateOutcome, candidate: Mapping[str, Any], *,
              report_url: str | None = None) -> str:
    """One ``<testcase>`` per audited pair (plus one per other pair a rule names, such as a confusion rate), a
    ``<failure>`` per result that fails the gate with its message and the report link, warnings in
    ``<system-out>``."""
    model = (comparison["candidate"] or {}).get("model") or {}
    suite_name = f"quirkscope gate: {model.get('name')} {model.get('version')}"
    by_pair = _results_by_pair(outcome.results)
    pairs = [(p["a"], p["b"]) for p in candidate.get("pairs") or []]
    audited = {pair_key(a, b) for a, b in pairs}
    pairs += [key for key in by_pair if key not in audited]
    root = ET.Element("testsuites", name="quirkscope gate")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(pairs)),
                          failures=str(sum(1 for a, b in pairs if any(r.level == "fail"
                                                                         for r in by_pair.get(pair_key(a, b), [])))),
                          errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="baseline", value=_model_line(comparison["baseline"]))
    ET.SubElement(props, "property", name="decision", value="passed" if outcome.passed else "failed")
    if report_url:
        ET.SubElement(props, "property", name="report", value=report_url)
    for a, b in pairs:
        key = pair_key(a, b)
        name = f"{a} vs {b}" + ("" if key in audited else " (not audited)")
        case = ET.SubElement(suite, "testcase", classname=f"quirkscope.{model.get('name')}", name=name, time="0")
        link = f"\nreport: {report_url}" if report_url else ""
        for r in by_pair.get(key, []):
            if r.level == "fail":
                failure = ET.SubElement(case, "failure", message=r.message, type=r.rule)
                failure.text = r.message + (f"\n{r.detail}" if r.detail else "") \
                    + (f"\nfingerprint: {r.fingerprint}" if r.fingerprint else "") + link
        warnings = [r for r in by_pair.get(key, []) if r.level == "warn"]
        if warnings:
            ET.SubElement(case, "system-out").text = "\n".join(f"warning ({r.rule}): {r.message}" for r in warnings) \
                + link
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _md(text: Any) -> str:
    """A table cell: pipes escaped, one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_summary(comparison: Mapping[str, Any], outcome: GateOutcome, *, report_url: str | None = None) -> str:
    """The Markdown summary: the decision, failures and warnings, then every finding with its state and decision."""
    cand = comparison["candidate"] or {}
    model = cand.get("model") or {}
    verdict = "passed" if outcome.passed else "FAILED"
    lines = [f"## QuirkScope gate {verdict}: {model.get('name')} {model.get('version')}", "",
             f"Candidate: {_model_line(cand)}. Baseline: {_model_line(comparison['baseline'])}."]
    pairs = comparison["pairs"]
    counts = comparison["counts"]
    lines += [f"Pairs: {len(pairs['new'])} new, {len(pairs['gone'])} gone, {len(pairs['persisting'])} persisting. "
              f"Findings: {counts['new']} new, {counts['persisting']} persisting, {counts['absent']} absent.", ""]
    for title, results in (("Failures", outcome.failures), ("Warnings", outcome.warnings)):
        if results:
            lines.append(f"**{title} ({len(results)})**")
            lines += [f"- `{r.rule}`: {r.message}" for r in results]
            lines.append("")
    found = list(candidate_findings(comparison)) + list(comparison["findings"]["absent"])
    if found:
        lines += ["| state | finding | severity | decision |", "|---|---|---|---|"]
        for f in found:
            decision = f.get("decision") or {}
            said = decision.get("verdict", "reopened (severity rose)" if f.get("reopened") else "-")
            if decision.get("source") == "baseline":
                said += " (carried from the baseline)"
            lines.append(f"| {f['baseline_state']} | {_md(finding_label(f))} | {_md(f.get('severity'))} | "
                         f"{_md(said)} |")
        lines.append("")
    if report_url:
        lines += [f"Report: {report_url}", ""]
    return "\n".join(lines)


def _sarif_level(results: Sequence[RuleResult]) -> str:
    if any(r.level == "fail" for r in results):
        return "error"
    if results:
        return "warning"
    return "note"


def sarif_log(comparison: Mapping[str, Any], outcome: GateOutcome, *, artifact: str, tool_version: str,
              report_url: str | None = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one result per finding of the candidate (and per absent finding of the baseline, when
    there is one), ``partialFingerprints`` = the finding's fingerprint, ``baselineState`` new / unchanged / updated
    / absent, level error when the finding fails the gate, warning when a rule warns on it, note otherwise; a
    dismissed finding carries an accepted suppression. ``artifact`` is the model bundle's path (the location)."""
    model = (comparison["candidate"] or {}).get("model") or {}
    by_fingerprint: dict[str, list[RuleResult]] = {}
    for r in outcome.results:
        if r.fingerprint:
            by_fingerprint.setdefault(r.fingerprint, []).append(r)
    has_baseline = comparison["baseline"] is not None
    found = list(candidate_findings(comparison)) + (list(comparison["findings"]["absent"]) if has_baseline else [])
    codes = sorted({f["code"] for f in found})
    rules = [{"id": code, "name": code.title().replace("_", ""),
              "shortDescription": {"text": FLAG_DESCRIPTIONS.get(code, code)}} for code in codes]
    uri = urllib.parse.quote(artifact.replace("\\", "/"))
    results = []
    for f in found:
        gate = by_fingerprint.get(f["fingerprint"], [])
        where = f"{f['a']}/{f['b']}" + (f"/{f['stream']}" if f.get("stream") else "")
        result: dict[str, Any] = {
            "ruleId": f["code"], "ruleIndex": codes.index(f["code"]),
            "level": _sarif_level(gate) if f["baseline_state"] != "absent" else "none",
            "message": {"text": f"{finding_label(f)}: {f.get('message', '')}".strip()},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}},
                           "logicalLocations": [{"name": where, "fullyQualifiedName": f"{model.get('name')}/{where}",
                                                 "kind": "member"}]}],
            "partialFingerprints": {FINGERPRINT_KEY: f["fingerprint"]},
            "properties": {"pair": [f["a"], f["b"]], "stream": f.get("stream"), "class": f.get("class_name"),
                           "severity": f.get("severity"), "decision": (f.get("decision") or {}).get("verdict"),
                           "gate": [r.to_json() for r in gate]},
        }
        if has_baseline:
            result["baselineState"] = f["baseline_state"]
        if (f.get("decision") or {}).get("verdict") == "dismissed":
            result["suppressions"] = [{"kind": "external", "status": "accepted",
                                       "justification": f["decision"].get("note") or "dismissed by a reviewer"}]
        if report_url:
            result["hostedViewerUri"] = report_url
        results.append(result)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": TOOL_NAME, "version": tool_version, "rules": rules}},
        "automationDetails": {"id": f"quirkscope-gate/{model.get('name')}/{model.get('version')}"},
        "invocations": [{"executionSuccessful": True}],
        "results": results,
        "properties": {"decision": "passed" if outcome.passed else "failed", "model": model,
                       "baseline": comparison["baseline"]},
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
