"""Small report JSON dicts (DESIGN 3.4) built in memory for the comparison, gate-rule and CI-output tests."""
from __future__ import annotations

import copy
from typing import Any

CLASSES = ["Archery", "Bowling", "Cycling", "Diving"]


def flag(code: str, stream: str | None = "appearance", severity: str = "medium", class_name: str | None = "Archery",
         review: str | None = None, note: str = "", **extra: Any) -> dict[str, Any]:
    out = {"code": code, "stream": stream, "severity": severity, "class_name": class_name, "peak_xy": None,
           "message": f"{code} message", **extra}
    if review:
        out["review"] = {"verdict": review, "note": note, "by": "alice", "at": "2026-11-27T10:00:00+00:00"}
    return out


def pair(a: str, b: str, rank: int, flags: list[dict], a_as_b: float = 0.3) -> dict[str, Any]:
    return {"a": a, "b": b, "rank": rank, "confusion": {"a_as_b": a_as_b, "b_as_a": 0.1, "counts": [3, 1]},
            "flags": flags}


def report(version: str, pairs: list[dict], *, audit_id: Any = 1, name: str = "tiny",
           matrix: list[list[int]] | None = None) -> dict[str, Any]:
    return {"audit": {"id": audit_id, "model": {"name": name, "version": version, "sha256": f"sha-{version}"},
                      "confusion": {"classes": CLASSES,
                                    "matrix": matrix or [[70, 30, 0, 0], [10, 90, 0, 0], [0, 0, 95, 5],
                                                         [0, 0, 5, 95]]}},
            "pairs": copy.deepcopy(pairs)}


def v1_v2() -> tuple[dict, dict]:
    """v1: a LOCALIZED_CUE on Archery/Bowling and a SHARED_EVIDENCE on Cycling/Diving; v2: the same cue, the shared
    evidence gone, and a new MOTION_ONLY_SEPARATION on a new pair."""
    v1 = report("1", [pair("Archery", "Bowling", 1, [flag("LOCALIZED_CUE")]),
                      pair("Cycling", "Diving", 2, [flag("SHARED_EVIDENCE", None, class_name=None)])], audit_id=1)
    v2 = report("2", [pair("Bowling", "Archery", 1, [flag("LOCALIZED_CUE")]),  # either order: the same pair
                      pair("Archery", "Cycling", 2, [flag("MOTION_ONLY_SEPARATION", "motion", class_name="Cycling")])],
                audit_id=2)
    return v1, v2
