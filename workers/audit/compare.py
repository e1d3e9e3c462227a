"""Comparison of two audits of a model (a candidate and its baseline, usually the previous release) on their report
JSON (DESIGN 3.4): which audited pairs are new, gone or persisting; which findings (flags, matched by their
fingerprint) are new, persisting or absent; and, for each finding of the candidate, the reviewer's decision that
stands for it. Pure: two dicts in, one dict out; the API, the in-process gate and the tests call the same code.

Decisions. A finding's own review (a reviewer looked at this audit) stands. Otherwise a persisting finding carries
the baseline's decision: *confirmed* and *needs-data* carry over as they are, *dismissed* carries over unless the
finding's severity rose since (then it is *reopened*: undecided again). The baseline's decision is its own review or,
when the baseline report carries one, the ``decision`` it inherited in turn from its own baseline -- so a decision
follows a finding from release to release, not just to the next one.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from workers.audit.flags import flag_fingerprint
from workers.engine.errors import InvalidInput

SEVERITIES = ("low", "medium", "high")
VERDICTS = ("confirmed", "dismissed", "needs-data")


def severity_rank(severity: str | None) -> int:
    """low < medium < high; anything else ranks below low."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def pair_key(a: str, b: str) -> tuple[str, str]:
    """A pair's identity: its two class names, in either order."""
    x, y = sorted((a, b))
    return x, y


def flag_class(flag: Mapping[str, Any]) -> str | None:
    """The class a flag is about: ``class_name`` of the report JSON (the API's flags also keep it in ``detail``)."""
    if flag.get("class_name") is not None:
        return flag["class_name"]
    return (flag.get("detail") or {}).get("class_name")


def finding_fingerprint(pair: Mapping[str, Any], flag: Mapping[str, Any]) -> str:
    """The flag's stored fingerprint, or the one computed from its fields (reports written before fingerprints)."""
    return flag.get("fingerprint") or flag_fingerprint(pair["a"], pair["b"], flag["code"], flag.get("stream"),
                                                       flag_class(flag))


def audit_ref(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Which audit of which model a report is: ``{id, model: {name, version, sha256}}``."""
    if report is None:
        return None
    audit = report.get("audit") or {}
    model = audit.get("model") or {}
    return {"id": audit.get("id"), "model": {k: model.get(k) for k in ("name", "version", "sha256")}}


def ensure_same_model(candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> None:
    """A baseline must be an audit of the same model (name) -- another release of it, or the same one. Raises
    ``InvalidInput`` naming both otherwise."""
    cand, base = audit_ref(candidate)["model"], audit_ref(baseline)["model"]
    if cand.get("name") != base.get("name"):
        raise InvalidInput(f"the baseline is an audit of model {base.get('name')!r} {base.get('version')!r}, not of "
                           f"{cand.get('name')!r}: compare releases of one model", field="baseline")


def _review(flag: Mapping[str, Any]) -> dict[str, Any] | None:
    review = flag.get("review")
    if isinstance(review, Mapping) and review.get("verdict") in VERDICTS:
        return {"verdict": review["verdict"], "note": review.get("note", ""), "by": review.get("by"),
                "at": review.get("at"), "flag_id": review.get("flag_id", flag.get("id"))}
    return None


def standing_decision(flag: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision that stands for a flag of a report: its own review, else the one it inherited (``decision``)."""
    own = _review(flag)
    if own is not None:
        return {**own, "source": "review"}
    inherited = flag.get("decision")
    if isinstance(inherited, Mapping) and inherited.get("verdict") in VERDICTS:
        return dict(inherited)
    return None


def findings(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """fingerprint -> one finding of a report: where it is, what it says, and the decision standing for it."""
    out: dict[str, dict[str, Any]] = {}
    for pair in report.get("pairs") or []:
        for flag in pair.get("flags") or []:
            fp = finding_fingerprint(pair, flag)
            out[fp] = {"fingerprint": fp, "a": pair["a"], "b": pair["b"], "rank": pair.get("rank"),
                       "code": flag["code"], "stream": flag.get("stream") or None, "class_name": flag_class(flag),
                       "severity": flag.get("severity"), "message": flag.get("message", ""),
                       "peak_xy": flag.get("peak_xy"), "flag_id": flag.get("id"),
                       "review": _review(flag), "standing": standing_decision(flag)}
    return out


def carried_decision(candidate: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> tuple[dict | None, bool]:
    """The decision for a candidate finding and whether a dismissal was reopened (its severity rose). Pure."""
    if candidate["review"] is not None:
        return {**candidate["review"], "source": "candidate"}, False
    if baseline is None or baseline["standing"] is None:
        return None, False
    standing = baseline["standing"]
    rose = severity_rank(candidate["severity"]) > severity_rank(baseline["severity"])
    if standing["verdict"] == "dismissed" and rose:
        return None, True
    carried = {k: v for k, v in standing.items() if k != "source"}
    return {**carried, "source": "baseline", "baseline_audit": baseline.get("audit_id")}, False


def _pair_summary(pair: Mapping[str, Any]) -> dict[str, Any]:
    return {"a": pair["a"], "b": pair["b"], "rank": pair.get("rank"), "confusion": pair.get("confusion"),
            "flags": [f["code"] for f in pair.get("flags") or []]}


def compare_reports(candidate: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pairs new / gone / persisting and findings new / persisting / absent of ``candidate`` relative to
    ``baseline`` (``None``: the first release -- every pair and finding is new), each candidate finding with its
    ``baseline_state`` (SARIF's new / unchanged / updated; absent for the baseline's findings that are gone), the
    baseline's side of it and the ``decision`` standing for it (module docstring). Lists keep rank order."""
    base_pairs = {pair_key(p["a"], p["b"]): p for p in (baseline or {}).get("pairs") or []}
    cand_pairs = {pair_key(p["a"], p["b"]): p for p in candidate.get("pairs") or []}
    base_id = (baseline or {}).get("audit", {}).get("id")
    base_findings = findings(baseline) if baseline is not None else {}
    for finding in base_findings.values():
        finding["audit_id"] = base_id
    out_findings: dict[str, list[dict[str, Any]]] = {"new": [], "persisting": [], "absent": []}
    for fp, finding in findings(candidate).items():
        before = base_findings.get(fp)
        decision, reopened = carried_decision(finding, before)
        entry = {k: v for k, v in finding.items() if k not in ("standing",)}
        entry.update({"decision": decision, "reopened": reopened,
                      "severity_rose": before is not None and severity_rank(finding["severity"])
                      > severity_rank(before["severity"])})
        if before is None:
            entry.update({"baseline_state": "new", "baseline": None})
            out_findings["new"].append(entry)
        else:
            entry["baseline_state"] = "unchanged" if before["severity"] == finding["severity"] else "updated"
            entry["baseline"] = {"flag_id": before["flag_id"], "severity": before["severity"],
                                 "decision": before["standing"]}
            out_findings["persisting"].append(entry)
    for fp, finding in base_findings.items():
        if fp not in {f["fingerprint"] for part in ("new", "persisting") for f in out_findings[part]}:
            entry = {k: v for k, v in finding.items() if k not in ("standing", "audit_id")}
            entry.update({"baseline_state": "absent", "decision": finding["standing"], "baseline": None,
                          "reopened": False, "severity_rose": False})
            out_findings["absent"].append(entry)
    return {
        "candidate": audit_ref(candidate), "baseline": audit_ref(baseline),
        "pairs": {"new": [_pair_summary(p) for k, p in cand_pairs.items() if k not in base_pairs],
                  "gone": [_pair_summary(p) for k, p in base_pairs.items() if k not in cand_pairs]
                  if baseline is not None else [],
                  "persisting": [_pair_summary(p) for k, p in cand_pairs.items() if k in base_pairs]},
        "findings": out_findings,
        "counts": {part: len(items) for part, items in out_findings.items()},
    }


def candidate_findings(comparison: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The findings the candidate raises (new, then persisting), in rank order."""
    items = list(comparison["findings"]["new"]) + list(comparison["findings"]["persisting"])
    return sorted(items, key=lambda f: (f.get("rank") or 0, f["code"], f.get("stream") or ""))


def with_decisions(report: Mapping[str, Any], comparison: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the candidate ``report`` whose flags carry the ``decision`` that stands for them, so that the report
    can serve as the next release's baseline and pass its decisions on."""
    decided = {f["fingerprint"]: f["decision"] for f in candidate_findings(comparison)}
    pairs = []
    for pair in report.get("pairs") or []:
        flags = [{**flag, "fingerprint": finding_fingerprint(pair, flag),
                  "decision": decided.get(finding_fingerprint(pair, flag))} for flag in pair.get("flags") or []]
        pairs.append({**pair, "flags": flags})
    return {**report, "pairs": pairs}
