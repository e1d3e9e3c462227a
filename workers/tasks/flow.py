"""How an audit moves through its stages: enqueue a stage's tasks as a chord joined by ``advance_audit``,
advance the stage once every item is done, finalize the audit after its report."""
from __future__ import annotations

import logging
from typing import Any

from celery import chain, chord, group, shared_task, signature
from sqlalchemy import select, update

from db.models import FINISHED_STATUSES, Audit, ClassPair, WorkItem, utcnow
from workers import runtime
from workers.tasks.claims import stage_counts

log = logging.getLogger(__name__)

STAGES = ("plan", "visualise", "evaluate", "score", "report", "finished")
TASK_OPTIONS: dict[str, Any] = {"bind": True, "acks_late": True}
# the stage tasks (workers.tasks.stages), enqueued by name so that this module does not import them
STAGE_TASKS = {"visualise": "workers.tasks.visualise_chunk", "evaluate": "workers.tasks.evaluate_pair",
               "score": "workers.tasks.score_pair"}
REPORT_TASK = "workers.tasks.render_report"


def _send_stage(audit_id: int, stage: str) -> None:
    """Enqueue the tasks of ``stage`` (whose work items exist) as a chord joined by ``advance_audit``."""
    with runtime.current().database.sessionmaker() as session:
        items = session.scalars(select(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.kind == stage,
                                                       WorkItem.status == "queued").order_by(WorkItem.key)).all()
        session.execute(update(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.kind == stage)
                        .values(enqueued_at=utcnow()))
        session.commit()
    if stage == "report":
        chain(signature(REPORT_TASK, args=(audit_id,), immutable=True), finalize_audit.si(audit_id)).apply_async()
        return
    name = STAGE_TASKS[stage]
    header = [signature(name, args=tuple(item.payload["args"]), immutable=True) for item in items]
    if header:
        chord(group(header), advance_audit.si(audit_id)).apply_async()
    else:
        advance_audit.delay(audit_id)


def _after_reaped(audit_id: int, reaped: bool) -> None:
    """A task re-enqueued by the reaper is outside its chord: it triggers the join itself."""
    if reaped:
        advance_audit.delay(audit_id)


@shared_task(name="workers.tasks.advance_audit", queue="cpu", **TASK_OPTIONS)
def advance_audit(self, audit_id: int) -> str:  # type: ignore[no-untyped-def]
    """If every item of the audit's current stage is done, move to the next stage and enqueue it. A message
    for an audit that is deleted or already finished (a duplicate or late chord callback) does nothing."""
    with runtime.current().database.sessionmaker() as session:
        audit = session.get(Audit, audit_id)
        if audit is None:
            log.info("audit %s: advance ignored, the audit is gone", audit_id)
            return "gone"
        if audit.status in FINISHED_STATUSES:
            log.info("audit %s: advance ignored, the audit is already %s", audit_id, audit.status)
            return f"already {audit.status}"
        if audit.status != "running":
            return "idle"
        counts = stage_counts(session, audit_id)
        stage = audit.stage
        done, total = counts.get(stage, (0, 0))
        if stage == "finished" or done < total:
            return "waiting"
    if stage == "report":  # the report is rendered but its chained finalize never ran (its message was lost)
        finalize_audit.delay(audit_id)
        return "finalizing"
    with runtime.current().database.sessionmaker() as session:
        following = STAGES[STAGES.index(stage) + 1]
        while following != "report" and counts.get(following, (0, 0))[1] == 0:
            following = STAGES[STAGES.index(following) + 1]
        moved = session.execute(update(Audit).where(Audit.id == audit_id, Audit.stage == stage,
                                                    Audit.status == "running").values(stage=following))
        session.commit()
    if not moved.rowcount:
        return "raced"
    log.info("audit %s: stage %s -> %s", audit_id, stage, following)
    _send_stage(audit_id, following)
    return following


@shared_task(name="workers.tasks.finalize_audit", queue="cpu", **TASK_OPTIONS)
def finalize_audit(self, audit_id: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Mark the audit done once its report is rendered (progress 1, finish time, timings)."""
    with runtime.current().database.sessionmaker() as session:
        counts = stage_counts(session, audit_id)
        if any(done < total for done, total in counts.values()):
            return "waiting"
        audit = session.get(Audit, audit_id)
        if audit is None:
            return "gone"
        now = utcnow()
        timings = dict(audit.timings or {})
        if audit.started_at is not None:
            from db.session import as_utc

            timings["total_s"] = round((now - as_utc(audit.started_at)).total_seconds(), 3)
        done = session.execute(update(Audit).where(Audit.id == audit_id, Audit.status == "running")
                               .values(status="done", stage="finished", progress=1.0, finished_at=now,
                                       timings=timings))
        session.commit()
    if done.rowcount:
        log.info("audit %s: done", audit_id)
    return "done" if done.rowcount else "idle"


def pair_by_rank(session: Any, audit_id: int, rank: int) -> ClassPair:
    return session.scalar(select(ClassPair).where(ClassPair.audit_id == audit_id, ClassPair.rank == rank))

