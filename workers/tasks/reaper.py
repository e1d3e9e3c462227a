"""The reaper: finds work whose worker died (a running item with a stale heartbeat or a dead process),
and re-enqueues it, or fails it with the reason once it has used up its attempts; re-sends a start whose
message never arrived; and moves on audits whose stage finished but whose join never fired. Needed in
embedded mode (the filesystem broker does not redeliver) and a backstop under Redis."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Audit, WorkItem, utcnow
from db.session import as_utc
from workers.tasks.claims import fail_audit, holder_alive, stage_counts

log = logging.getLogger(__name__)
ADVANCE_TASK = "workers.tasks.advance_audit"
STAGE_OF_KIND = {"plan": "plan", "visualise": "visualise", "evaluate": "evaluate", "score": "score",
                 "report": "report"}


@dataclass
class ReapReport:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    advanced: list[int] = field(default_factory=list)


def send_item(celery: Celery, item: WorkItem, **extra: Any) -> None:
    """(Re)send the task of a work item as recorded in its payload."""
    task = item.payload.get("task")
    if not task:
        raise ValueError(f"work item {item.id} records no task")
    celery.send_task(task, args=list(item.payload.get("args", [])), kwargs={"reaped": True, **extra},
                     queue=item.payload.get("queue", "cpu"))


def reap_once(session: Session, celery: Celery, *, max_attempts: int, stale_after_s: float,
              now: dt.datetime | None = None) -> ReapReport:
    now = now or utcnow()
    report = ReapReport()
    running = session.scalars(select(WorkItem).join(Audit, Audit.id == WorkItem.audit_id)
                              .where(WorkItem.status == "running", Audit.status == "running")).all()
    for item in running:
        if holder_alive(item, stale_after_s=stale_after_s, now=now):
            continue
        if item.attempts >= max_attempts:
            reason = (f"{item.kind} {item.key} gave up after {item.attempts} attempts: its worker died each time "
                      f"(last worker {item.worker or '?'})")
            done = session.execute(update(WorkItem).where(WorkItem.id == item.id, WorkItem.status == "running",
                                                          WorkItem.attempts == item.attempts)
                                   .values(status="failed", error=reason, finished_at=now))
            session.commit()
            if done.rowcount:
                fail_audit(session, item.audit_id, reason, "too_many_attempts")
                report.failed.append(item.id)
            continue
        done = session.execute(update(WorkItem).where(WorkItem.id == item.id, WorkItem.status == "running",
                                                      WorkItem.attempts == item.attempts,
                                                      WorkItem.worker == item.worker)
                               .values(status="queued", heartbeat_at=None, enqueued_at=now,
                                       error=f"worker {item.worker} died; re-enqueued by the reaper"))
        session.commit()
        if done.rowcount:
            log.warning("audit %s: %s %s re-enqueued (worker %s died)", item.audit_id, item.kind, item.key,
                        item.worker)
            send_item(celery, item)
            report.requeued.append(item.id)

    # A start (plan) whose message was lost: queued audit, its plan item queued for longer than stale_after.
    waiting = session.scalars(select(WorkItem).join(Audit, Audit.id == WorkItem.audit_id)
                              .where(WorkItem.kind == "plan", WorkItem.status == "queued",
                                     Audit.status.in_(("queued", "running")))).all()
    for item in waiting:
        since = as_utc(item.enqueued_at)
        if since is not None and (now - since).total_seconds() > stale_after_s:
            session.execute(update(WorkItem).where(WorkItem.id == item.id).values(enqueued_at=now))
            session.commit()
            send_item(celery, item)
            report.resent.append(item.audit_id)

    # A stage whose items are all done but whose join (chord callback) never ran.
    for audit in session.scalars(select(Audit).where(Audit.status == "running")).all():
        counts = stage_counts(session, audit.id)
        done, total = counts.get(audit.stage, (0, 0))
        if total and done == total:
            celery.send_task(ADVANCE_TASK, args=[audit.id], queue="cpu")
            report.advanced.append(audit.id)
    return report
