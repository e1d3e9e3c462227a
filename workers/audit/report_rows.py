"""The report JSON of DESIGN 3.4 assembled from the stored rows of an audit (the source of truth), so that
the API answers the same while an audit runs and after it is done; plus the audit status view and the
comparison of two audits (``workers.audit.compare`` on their reports, with the decisions carried along the chain
of baselines).

The functions read attributes only (``audit.pairs``, ``pair.flags``, ``flag.reviews`` ...), so they take the
``db.models`` rows without this package importing the database layer."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from workers.audit.compare import compare_reports, with_decisions
from workers.audit.flag_rates import code_rate, load_flag_rates
from workers.audit.flags import flag_fingerprint

Audit = ClassPair = Flag = Review = Any  # the db.models rows of the same names, read by attribute

ARTIFACT_FIELDS = ("gif", "mp4", "png", "npy")
Link = Callable[[str], str]


def artifact_prefix(audit_id: int) -> str:
    return f"audits/{audit_id}/"


def audit_error(audit: Audit) -> dict[str, Any] | None:
    if not audit.error:
        return None
    return {"code": audit.error_code or "audit_failed", "message": audit.error, "field": None}


def audit_status(audit: Audit, n_pairs: int) -> dict[str, Any]:
    model = audit.model
    return {
        "id": audit.id, "status": audit.status, "stage": audit.stage,
        "progress": round(float(audit.progress or 0.0), 4), "error": audit_error(audit),
        "timings": audit.timings or {}, "options": audit.options or {},
        "model": {"id": model.id, "name": model.name, "version": model.version, "sha256": model.sha256},
        "baseline": audit.baseline_id, "n_pairs": n_pairs,
        "created_at": _iso(audit.created_at), "started_at": _iso(audit.started_at),
        "finished_at": _iso(audit.finished_at),
    }


def review_dict(review: Review) -> dict[str, Any]:
    return {"id": review.id, "flag_id": review.flag_id, "verdict": review.verdict, "note": review.note,
            "by": review.reviewer, "at": _iso(review.created_at)}


def flag_dict(flag: Flag) -> dict[str, Any]:
    latest = flag.reviews[-1] if flag.reviews else None
    class_name = (flag.detail or {}).get("class_name")
    fingerprint = flag.fingerprint or flag_fingerprint(flag.pair.class_a, flag.pair.class_b, flag.code, flag.stream,
                                                       class_name)
    return {"id": flag.id, "code": flag.code, "stream": flag.stream, "severity": flag.severity,
            "peak_xy": flag.peak_xy, "message": flag.message, "class_name": class_name, "fingerprint": fingerprint,
            **({"detail": flag.detail} if flag.detail else {}),
            "benchmark": code_rate(flag.code, load_flag_rates()),
            "review": review_dict(latest) if latest else None}


def scores_dict(pair: ClassPair) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for row in sorted(pair.scores, key=lambda r: (r.stream, r.name)):
        if row.stream:
            scores.setdefault(row.stream, {})[row.name] = row.value
        else:
            scores[row.name] = row.value
    return scores


def pair_dict(pair: ClassPair, link: Link | None = None) -> dict[str, Any]:
    return {
        "id": pair.id, "a": pair.class_a, "b": pair.class_b, "rank": pair.rank, "explicit": pair.explicit,
        "confusion": pair.confusion, "scored": pair.scored, "scores": scores_dict(pair),
        "flags": [flag_dict(f) for f in pair.flags],
        "artifacts": map_artifacts(pair.artifacts or {}, link) if link else (pair.artifacts or {}),
    }


def build_report(audit: Audit, link: Link | None = None) -> dict[str, Any]:
    """``link(rel)`` turns an artifact path (relative to the audit's folder) into a URL; without it the
    paths stay relative, as the HTML renderer wants them."""
    manifest = audit.model.manifest or {}
    plan = audit.plan or {}
    streams = plan.get("streams") or [{"name": i["name"], "modality": i["modality"]}
                                      for i in manifest.get("inputs", [])]
    head = audit_status(audit, len(audit.pairs))
    head.update({"classes": audit.model.classes, "streams": streams, "levels": plan.get("levels", []),
                 "confusion": audit.confusion})
    for key, value in plan.items():
        head.setdefault(key, value)
    return {"audit": head, "pairs": [pair_dict(p, link) for p in audit.pairs]}


def map_artifacts(value: Any, link: Link) -> Any:
    """Replace every artifact path (the values of gif/mp4/png/npy keys) by ``link(path)``."""
    if isinstance(value, dict):
        return {k: (link(v) if k in ARTIFACT_FIELDS and isinstance(v, str) else map_artifacts(v, link))
                for k, v in value.items()}
    if isinstance(value, list):
        return [map_artifacts(v, link) for v in value]
    return value


MAX_BASELINE_CHAIN = 50


def decided_report(audit: Audit, link: Link | None = None) -> dict[str, Any]:
    """The report of ``audit`` whose flags carry the reviewer decision standing for them: their own review, else the
    one carried from the audit's baseline (``compare.carried_decision``), which got its decisions from its own
    baseline in turn -- along the chain of ``baseline`` audits (at most ``MAX_BASELINE_CHAIN`` deep, cycles cut)."""
    chain: list[Audit] = []
    seen: set[int] = set()
    current: Audit | None = audit
    while current is not None and current.id not in seen and len(chain) < MAX_BASELINE_CHAIN:
        chain.append(current)
        seen.add(current.id)
        current = current.baseline
    decided: dict[str, Any] | None = None
    for row in reversed(chain):  # oldest first: each report inherits from the one before it
        report = build_report(row, link if row is audit else None)
        decided = with_decisions(report, compare_reports(report, decided))
    return decided  # type: ignore[return-value] - the chain holds ``audit`` at least


def compare_audits(audit: Audit, baseline: Audit, link: Link | None = None) -> dict[str, Any]:
    """``compare.compare_reports`` of ``audit`` against ``baseline``, the baseline's decisions being those that
    stand for it (``decided_report``); plus, for the older ``/compare/<other>`` route, ``audit``, ``other`` and
    ``flags`` {new, gone, persisting} (the findings under their older names)."""
    comparison = compare_reports(build_report(audit, link), decided_report(baseline))
    found = comparison["findings"]
    return {**comparison, "audit": audit.id, "other": baseline.id,
            "flags": {"new": found["new"], "gone": found["absent"], "persisting": found["persisting"]}}


def _iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, and everything stored is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)).isoformat()
