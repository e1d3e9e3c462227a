"""The reaper: finds work whose worker died (a running item with a stale heartbeat or a dead process),
and re-enqueues it, or fails it with the reason once it has used up its attempts; re-sends the work of
any stage whose message never reached a worker; and moves on audits whose stage finished but whose join never
fired. Needed in embedded mode (the filesystem broker does not redeliver) and a backstop under Redis."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.models import Audit, WorkItem, utcnow
from db.session import as_utc
from workers.tasks.claims import give_up_item, holder_alive, stage_counts

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


def queue_idle(session: Session, queue: str, *, now: dt.datetime, idle_for_s: float) -> bool:
    """Whether no work item of ``queue`` is running or was claimed in the last ``idle_for_s`` seconds."""
    since = now - dt.timedelta(seconds=idle_for_s)
    for item in session.scalars(select(WorkItem).where(or_(WorkItem.status == "running",
                                                           WorkItem.started_at >= since))):
        started = as_utc(item.started_at)
        if item.payload.get("queue", "cpu") == queue and (
                item.status == "running" or (started is not None and started >= since)):
            return False
    return True


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
            if give_up_item(session, item.id, item.audit_id, ("running", item.attempts), reason, now):
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

    # Work of the current stage whose message was lost between the broker and a worker (a restarted broker
    # without persistence, a worker that died after fetching it and before claiming it): queued for longer
    # than stale_after while its queue sat idle (nothing running or started there in that time, so the
    # message is not merely waiting behind others). Sent again; a duplicate finds the row claimed or done.
    waiting = session.scalars(select(WorkItem).join(Audit, Audit.id == WorkItem.audit_id)
                              .where(WorkItem.status == "queued", WorkItem.kind == Audit.stage,
                                     Audit.status.in_(("queued", "running")))).all()
    idle: dict[str, bool] = {}
    for item in waiting:
        since = as_utc(item.enqueued_at)
        if since is None:  # its stage was entered but never sent (the sender failed): the clock starts now
            session.execute(update(WorkItem).where(WorkItem.id == item.id, WorkItem.enqueued_at.is_(None))
                            .values(enqueued_at=now))
            session.commit()
            continue
        if (now - since).total_seconds() <= stale_after_s:
            continue
        queue = item.payload.get("queue", "cpu")
        if queue not in idle:
            idle[queue] = queue_idle(session, queue, now=now, idle_for_s=stale_after_s)
        if not idle[queue]:
            continue
        session.execute(update(WorkItem).where(WorkItem.id == item.id).values(enqueued_at=now))
        session.commit()
        log.warning("audit %s: %s %s re-sent (its message was lost)", item.audit_id, item.kind, item.key)
        send_item(celery, item)
        report.resent.append(item.audit_id)

    # A stage whose items are all done but whose join (chord callback) never ran: only once the stage has
    # been complete for stale_after and the cpu queue is idle. Sooner, or on every pass, the advances pile
    # up behind a busy queue (thousands under load) and delay the very callbacks they stand in for.
    for audit in session.scalars(select(Audit).where(Audit.status == "running")).all():
        counts = stage_counts(session, audit.id)
        done, total = counts.get(audit.stage, (0, 0))
        if not total or done != total:
            continue
        last = session.scalar(select(func.max(WorkItem.finished_at)).where(WorkItem.audit_id == audit.id,
                                                                           WorkItem.kind == audit.stage))
        last = as_utc(last)
        if last is not None and (now - last).total_seconds() <= stale_after_s:
            continue
        if "cpu" not in idle:
            idle["cpu"] = queue_idle(session, "cpu", now=now, idle_for_s=stale_after_s)
        if not idle["cpu"]:
            continue
        celery.send_task(ADVANCE_TASK, args=[audit.id], queue="cpu")
        report.advanced.append(audit.id)
    return report
