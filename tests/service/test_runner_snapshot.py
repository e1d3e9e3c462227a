"""A task body that is slow before its first write (the first task of a fresh worker process imports the model
stack for seconds) still writes: the runner does not hand it a read snapshot that the heartbeat's commits have
overtaken. On SQLite such a snapshot cannot be upgraded to a write ("database is locked", at once), and the first
plan of every fresh embedded stack failed and was retried (5 of 13 reliability tests' logs at de92a9f)."""
from __future__ import annotations

import time
from types import SimpleNamespace

from sqlalchemy import select, update

from db.models import Audit, WorkItem
from tests.service.conftest import make_settings, stored_model
from workers.runtime import WorkerContext, activate
from workers.tasks.runner import run_item


class NoRetry:
    """Stands in for the bound Celery task: a retry is a failure of this test."""

    request = SimpleNamespace(retries=0)

    def retry(self, exc=None, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the body was retried: {exc}")


def test_a_body_slow_before_its_first_write_is_not_refused_the_write(settings, tmp_path) -> None:
    fast = make_settings(tmp_path, settings.database_url, heartbeat_s=0.05)
    context = WorkerContext.from_settings(fast)
    with context.database.sessionmaker() as session:
        model = stored_model(session)
        audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status="queued",
                      stage="plan")
        session.add(audit)
        session.flush()
        session.add(WorkItem(audit_id=audit.id, kind="plan", key=0, status="queued",
                             payload={"task": "workers.tasks.start_audit", "args": [audit.id], "queue": "cpu"}))
        session.commit()
        audit_id = audit.id
    beats_seen = []

    def body(session, item) -> None:  # type: ignore[no-untyped-def]
        time.sleep(0.5)                      # a first import: the heartbeat commits meanwhile
        with context.database.sessionmaker() as other:        # (not through ``item``: that would read anew)
            beats_seen.append(other.scalars(select(WorkItem.heartbeat_at).where(WorkItem.audit_id == audit_id))
                              .one())
        session.execute(update(Audit).where(Audit.id == audit_id).values(status="running"))
        session.commit()

    with activate(context):
        assert run_item(NoRetry(), audit_id, "plan", 0, body) == "done"
    with context.database.sessionmaker() as session:
        assert session.get(Audit, audit_id).status == "running"
        assert session.scalars(select(WorkItem.status).where(WorkItem.audit_id == audit_id)).one() == "done"
    assert beats_seen[0] is not None
    context.database.engine.dispose()
