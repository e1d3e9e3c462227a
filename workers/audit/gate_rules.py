"""The rules of a release gate and their evaluation: a comparison of the candidate audit with its baseline
(``workers.audit.compare``) and the rules in, a list of results (each one fails or warns, and names the finding or
pair) and a pass/fail decision out. Pure: no I/O; the CLI (``service.gate``) reads the rules from a committed config
file and runs the audit.

Rules (each ``fail``, ``warn`` or ``off``):
- ``new_findings`` (``min_severity``, default medium; ``codes``, default all): a finding that is new relative to the
  baseline (every finding when there is none), at or above the severity, of one of the codes, and not dismissed;
- ``confirmed_findings``: a finding a reviewer confirmed (on this audit, or carried from the baseline) is still raised;
- ``localized_cue``: any ``LOCALIZED_CUE`` that is not dismissed, new or not;
- ``confusion_rate`` (``max``): a pair of classes whose confusion rate exceeds ``max``: the larger of the share of a's
  test clips predicted as b and the share of b's predicted as a, over every pair of the confusion matrix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.audit.compare import SEVERITIES, candidate_findings, severity_rank
from workers.audit.flags import FLAG_CODES

Action = Literal["fail", "warn", "off"]
Severity = Literal["low", "medium", "high"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action = "fail"

    @model_validator(mode="before")
    @classmethod
    def _action_alone(cls, value: Any) -> Any:
        """``rule = "warn"`` is short for ``rule = {action = "warn"}``."""
        return {"action": value} if isinstance(value, str) else value


class NewFindingsRule(_Rule):
    action: Action = "fail"
    min_severity: Severity = "medium"
    codes: list[str] | None = Field(default=None, description="only these flag codes count (default: all)")

    @field_validator("codes")
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(FLAG_CODES))
        if unknown:
            raise ValueError(f"unknown flag code {unknown[0]!r} (the codes are {', '.join(FLAG_CODES)})")
        return value


class ConfirmedFindingsRule(_Rule):
    action: Action = "fail"


class LocalizedCueRule(_Rule):
    action: Action = "warn"


class ConfusionRateRule(_Rule):
    action: Action = "off"
    max: float = Field(0.5, gt=0, le=1)


class GateRules(BaseModel):
    """Every rule with its action and parameter; defaults: fail on new findings >= medium and on confirmed ones,
    warn on localized cues, no confusion-rate limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new_findings: NewFindingsRule = NewFindingsRule()
    confirmed_findings: ConfirmedFindingsRule = ConfirmedFindingsRule()
    localized_cue: LocalizedCueRule = LocalizedCueRule()
    confusion_rate: ConfusionRateRule = ConfusionRateRule()


RULE_NAMES = tuple(GateRules.model_fields)


@dataclass(frozen=True)
class RuleResult:
    """One thing a rule found: ``level`` is the rule's action (fail or warn)."""

    rule: str
    level: str
    message: str
    a: str
    b: str
    fingerprint: str | None = None
    code: str | None = None
    stream: str | None = None
    severity: str | None = None
    detail: str | None = None      # the flag's own message: what a reviewer should look at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    results: list[RuleResult]
    rules: GateRules

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if r.level == "fail"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.results if r.level == "warn"]

    def to_json(self) -> dict[str, Any]:
        return {"decision": "passed" if self.passed else "failed", "rules": self.rules.model_dump(mode="json"),
                "failures": [r.to_json() for r in self.failures], "warnings": [r.to_json() for r in self.warnings]}


def finding_label(f: Mapping[str, Any]) -> str:
    """``LOCALIZED_CUE[appearance] on A/B (medium, about A, peak at x=0.81 y=0.88)``."""
    where = f"[{f['stream']}]" if f.get("stream") else ""
    about = f", about {f['class_name']}" if f.get("class_name") else ""
    peak = f.get("peak_xy")
    at = f", peak at x={peak[0]:.2f} y={peak[1]:.2f}" if isinstance(peak, (list, tuple)) and len(peak) == 2 else ""
    return f"{f['code']}{where} on {f['a']}/{f['b']} ({f.get('severity')}{about}{at})"


def _dismissed(f: Mapping[str, Any]) -> bool:
    return (f.get("decision") or {}).get("verdict") == "dismissed"


def _finding_result(rule: str, action: str, f: Mapping[str, Any], why: str) -> RuleResult:
    return RuleResult(rule=rule, level=action, message=f"{why}: {finding_label(f)}", a=f["a"], b=f["b"],
                      fingerprint=f["fingerprint"], code=f["code"], stream=f.get("stream"), severity=f.get("severity"),
                      detail=f.get("message") or None)


def confusion_rates(confusion: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(a, b, rate) for every unordered pair of the matrix, rate = max(C_ab / n_a, C_ba / n_b). Pure."""
    classes = list(confusion.get("classes") or [])
    matrix = confusion.get("matrix") or []
    support = [sum(row) for row in matrix]
    out = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            r_ij = matrix[i][j] / support[i] if support[i] else 0.0
            r_ji = matrix[j][i] / support[j] if support[j] else 0.0
            out.append((classes[i], classes[j], max(r_ij, r_ji)))
    return out


def evaluate_gate(comparison: Mapping[str, Any], candidate: Mapping[str, Any], rules: GateRules) -> GateOutcome:
    """Apply ``rules`` to the candidate's findings (with their baseline state and decisions) and its confusion
    matrix; the gate passes when no result has the level ``fail``."""
    results: list[RuleResult] = []
    found = list(candidate_findings(comparison))
    has_baseline = comparison.get("baseline") is not None
    rule = rules.new_findings
    if rule.action != "off":
        floor = severity_rank(rule.min_severity)
        why = "new finding" if has_baseline else "finding (no baseline: every finding is new)"
        results += [_finding_result("new_findings", rule.action, f, why) for f in found
                    if f["baseline_state"] == "new" and severity_rank(f.get("severity")) >= floor
                    and (rule.codes is None or f["code"] in rule.codes) and not _dismissed(f)]
    rule = rules.confirmed_findings
    if rule.action != "off":
        for f in found:
            decision = f.get("decision") or {}
            if decision.get("verdict") == "confirmed":
                by = f" by {decision['by']}" if decision.get("by") else ""
                results.append(_finding_result("confirmed_findings", rule.action, f,
                                               f"finding confirmed{by} is still raised"))
    rule = rules.localized_cue
    if rule.action != "off":
        results += [_finding_result("localized_cue", rule.action, f, "localized cue") for f in found
                    if f["code"] == "LOCALIZED_CUE" and not _dismissed(f)]
    rule = rules.confusion_rate
    if rule.action != "off":
        confusion = (candidate.get("audit") or {}).get("confusion") or {}
        for a, b, rate in confusion_rates(confusion):
            if rate > rule.max:
                results.append(RuleResult(rule="confusion_rate", level=rule.action, a=a, b=b,
                                          message=f"confusion rate {rate:.0%} > {rule.max:.0%} between {a} and {b}"))
    return GateOutcome(passed=not any(r.level == "fail" for r in results), results=results, rules=rules)


__all__ = ["Action", "GateOutcome", "GateRules", "RULE_NAMES", "RuleResult", "SEVERITIES", "confusion_rates",
           "evaluate_gate", "finding_label"]
