"""A work item that fails and its audit fail in one commit: a process that died between two commits would leave
the audit ``running`` with its only unfinished item failed, and the reaper (which looks at running items) would
never end it. Both ways an item is given up on: a claim after too many attempts, and a failure inside the task."""
from __future__ import annotations

from sqlalchemy import event

from db.models import Audit, WorkItem
from tests.service.conftest import stored_model
from workers.tasks.claims import claim, fail_item_and_audit


def _running_item(session, attempts: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    model = stored_model(session)
    audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status="running",
                  stage="visualise")
    session.add(audit)
    session.flush()
    item = WorkItem(audit_id=audit.id, kind="visualise", key=0, status="queued", attempts=attempts,
                    payload={"task": "tests.crash_item", "args": [], "queue": "cpu"})
    session.add(item)
    session.commit()
    return audit.id, item.id


def _commits(session) -> list[int]:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    event.listen(session, "after_commit", lambda _s: seen.append(1))
    return seen


def test_a_claim_given_up_fails_the_item_and_its_audit_in_one_commit(db_session) -> None:
    audit_id, item_id = _running_item(db_session, attempts=3)
    commits = _commits(db_session)
    got = claim(db_session, audit_id, "visualise", 0, max_attempts=3, stale_after_s=30)
    assert got.outcome == "give_up" and len(commits) == 1
    db_session.expire_all()
    audit, item = db_session.get(Audit, audit_id), db_session.get(WorkItem, item_id)
    assert (item.status, audit.status, audit.error_code) == ("failed", "failed", "too_many_attempts")
    assert "gave up after 3 attempts" in audit.error


def test_a_failed_task_fails_its_item_and_audit_in_one_commit(db_session) -> None:
    audit_id, item_id = _running_item(db_session, attempts=1)
    commits = _commits(db_session)
    assert fail_item_and_audit(db_session, item_id, audit_id, "score 0 failed: ValueError: x", "internal_error")
    assert len(commits) == 1
    db_session.expire_all()
    audit, item = db_session.get(Audit, audit_id), db_session.get(WorkItem, item_id)
    assert (item.status, item.error, audit.status, audit.error_code) == \
        ("failed", "score 0 failed: ValueError: x", "failed", "internal_error")
