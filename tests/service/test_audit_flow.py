"""How ``advance_audit`` treats an audit that is already finished: a duplicate or late chord callback
delivered after the audit is done, failed or cancelled does nothing to it and says why."""
from __future__ import annotations

import logging

import pytest

from db.models import Audit
from tests.service.conftest import stored_model
from workers.runtime import WorkerContext, activate
from workers.tasks.flow import advance_audit


def _row(context: WorkerContext, audit_id: int) -> dict:
    """The audit's row as stored (read back in a fresh session)."""
    with context.database.sessionmaker() as session:
        audit = session.get(Audit, audit_id)
        return {column.key: getattr(audit, column.key) for column in Audit.__table__.columns}


@pytest.mark.parametrize(("status", "stage"), [("done", "finished"), ("failed", "visualise"),
                                               ("cancelled", "score"), ("cancelled", "report")])
def test_advance_of_a_finished_audit_is_a_logged_no_op(settings, status, stage, caplog) -> None:
    context = WorkerContext.from_settings(settings)
    with context.database.sessionmaker() as session:
        model = stored_model(session)
        audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status=status,
                      stage=stage, progress=0.5, error="earlier error" if status == "failed" else None)
        session.add(audit)
        session.commit()
        audit_id = audit.id
    before = _row(context, audit_id)

    with activate(context), caplog.at_level(logging.INFO, logger="workers.tasks.flow"):
        outcome = advance_audit.run(audit_id)

    assert outcome == f"already {status}"
    assert any(str(audit_id) in r.getMessage() and status in r.getMessage() for r in caplog.records)
    assert _row(context, audit_id) == before
    context.database.engine.dispose()


def test_advance_of_a_deleted_audit_says_it_is_gone(settings) -> None:
    context = WorkerContext.from_settings(settings)
    with activate(context):
        assert advance_audit.run(12345) == "gone"
    context.database.engine.dispose()
