"""What the fault tests share: a tiny audit (a four-class ONNX model of a few operators, one seed, one level,
a few steps: seconds on a CPU) submitted over HTTP, waiting for it to end, and counting what an audit must
never have: rows written twice for the same key, and audits that never end."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from db.models import Audit, ClassPair, Flag, PairScore, Visualization, WorkItem
from tests import hostile
from tests.service.conftest import wait_for

TINY_OPTIONS = {"top_k": 2, "seeds": 1, "levels": 1, "steps": 4}
TINY_CONFUSION = {"classes": hostile.CLASSES, "matrix": [[50, 30, 2, 0], [20, 60, 1, 1], [0, 1, 80, 5], [0, 0, 9, 70]]}
FINISHED = ("done", "failed", "cancelled")
# the key each kind of row is written under; two rows with one key are a duplicate
ROW_KEYS = {
    Visualization: (Visualization.audit_id, Visualization.class_name, Visualization.stream, Visualization.level,
                    Visualization.seed),
    WorkItem: (WorkItem.audit_id, WorkItem.kind, WorkItem.key),
    PairScore: (PairScore.pair_id, PairScore.name, PairScore.stream),
    Flag: (Flag.pair_id, Flag.code, Flag.stream),
    ClassPair: (ClassPair.audit_id, ClassPair.rank),
}


def tiny_bundle(model: bytes | None = None, **manifest_changes: Any) -> bytes:
    return hostile.zip_of([("manifest.json", json.dumps(hostile.manifest(**manifest_changes)).encode()),
                           ("model.onnx", hostile.onnx_graph() if model is None else model)])


def upload_tiny_model(stack, model: bytes | None = None, **manifest_changes: Any) -> int:  # type: ignore[no-untyped-def]
    status, body = stack.request("POST", "/api/v1/models",
                                 files={"bundle": ("tiny.zip", tiny_bundle(model, **manifest_changes))})
    assert status in (200, 201), body
    return body["id"]


def submit_audit(stack, model_id: int, options: dict | None = None) -> int:  # type: ignore[no-untyped-def]
    status, body = stack.request("POST", "/api/v1/audits", {"model_id": model_id, "confusion": TINY_CONFUSION,
                                                            "options": options or TINY_OPTIONS})
    assert status == 202, body
    return body["id"]


def wait_finished(stack, audit_id: int, timeout: float = 240) -> dict:  # type: ignore[no-untyped-def]
    def finished() -> dict | None:
        status, state = stack.request("GET", f"/api/v1/audits/{audit_id}")
        return state if status == 200 and state["status"] in FINISHED else None
    return wait_for(finished, timeout=timeout, interval=0.5, what=f"audit {audit_id} to finish")


def duplicate_rows(app) -> int:  # type: ignore[no-untyped-def]
    """Rows beyond the first for any key, over every keyed table."""
    extra = 0
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        for model, keys in ROW_KEYS.items():
            counts = s.execute(select(func.count()).select_from(model).group_by(*keys)
                               .having(func.count() > 1)).scalars().all()
            extra += sum(n - 1 for n in counts)
    return extra


def audits_by_status(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        return dict(s.execute(select(Audit.status, func.count()).group_by(Audit.status)).all())
