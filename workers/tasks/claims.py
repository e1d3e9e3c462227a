"""Work items as the source of truth for tasks: claim a row by a conditional UPDATE (so a duplicate or
redelivered message does nothing while another worker holds it), keep a heartbeat while running, finish
or release it, and give up with a reason once a row has been attempted ``max_attempts`` times (a task
that kills its worker each time). Also the audit-level state changes (fail, progress)."""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import FINISHED_STATUSES, Audit, WorkItem, utcnow
from db.session import as_utc

log = logging.getLogger(__name__)
STAGE_WEIGHTS = {"visualise": 0.75, "evaluate": 0.1, "score": 0.1, "report": 0.05}


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(item: WorkItem, *, stale_after_s: float, now: dt.datetime | None = None) -> bool:
    """Whether the worker that claimed ``item`` still runs it: a fresh heartbeat, and, when it ran on this
    host, a live process (a dead prefork child is noticed at once, not only when its heartbeat ages)."""
    now = now or utcnow()
    beat = as_utc(item.heartbeat_at)
    if beat is None or (now - beat).total_seconds() > stale_after_s:
        return False
    host, _, pid = (item.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


@dataclass(frozen=True)
class Claim:
    outcome: Literal["run", "skip", "give_up"]
    item_id: int | None = None
    attempt: int = 0
    reason: str = ""


def claim(session: Session, audit_id: int, kind: str, key: int, *, max_attempts: int,
          stale_after_s: float, worker: str | None = None) -> Claim:
    """Try to take the work item (audit, kind, key). ``run``: it is ours (attempt n); ``skip``: done,
    cancelled or held by a live worker; ``give_up``: attempted ``max_attempts`` times already, and now
    failed with the reason, and its audit failed in the same commit."""
    worker = worker or this_worker()
    item = session.scalar(select(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.kind == kind,
                                                 WorkItem.key == key))
    audit = session.get(Audit, audit_id)
    if item is None or audit is None:
        return Claim("skip", reason="no such work item (audit deleted?)")
    if audit.status in FINISHED_STATUSES:
        session.execute(update(WorkItem).where(WorkItem.id == item.id, WorkItem.status == "queued")
                        .values(status="cancelled"))
        session.commit()
        return Claim("skip", item.id, reason=f"audit is {audit.status}")
    if item.status in ("done", "failed", "cancelled"):
        return Claim("skip", item.id, reason=f"already {item.status}")
    if item.status == "running" and holder_alive(item, stale_after_s=stale_after_s):
        return Claim("skip", item.id, reason=f"held by {item.worker}")
    seen = (item.status, item.attempts)
    if item.attempts >= max_attempts:
        reason = (f"{kind} {key} gave up after {item.attempts} attempts: the worker running it died or the "
                  f"task failed each time (last worker {item.worker or '?'})"
                  + (f"; last error: {item.error}" if item.error else ""))
        given_up = give_up_item(session, item.id, audit_id, seen, reason)
        return Claim("give_up" if given_up else "skip", item.id, item.attempts, reason)
    now = utcnow()
    won = session.execute(update(WorkItem).where(WorkItem.id == item.id, WorkItem.status == seen[0],
                                                 WorkItem.attempts == seen[1])
                          .values(status="running", attempts=WorkItem.attempts + 1, worker=worker,
                                  heartbeat_at=now, started_at=now))
    session.commit()
    if not won.rowcount:
        return Claim("skip", item.id, reason="claimed concurrently")
    if seen[0] == "running":
        log.warning("audit %s: %s %s taken over from dead worker %s (attempt %d)", audit_id, kind, key,
                    item.worker, seen[1] + 1)
    return Claim("run", item.id, seen[1] + 1)


def finish(session: Session, item_id: int, *, worker: str | None = None) -> bool:
    done = session.execute(update(WorkItem).where(WorkItem.id == item_id, WorkItem.status == "running",
                                                  WorkItem.worker == (worker or this_worker()))
                           .values(status="done", finished_at=utcnow(), error=None))
    session.commit()
    return bool(done.rowcount)


def release(session: Session, item_id: int, error: str, *, worker: str | None = None) -> None:
    """Give the item back (queued) before a retry, keeping the error and the attempt count."""
    session.execute(update(WorkItem).where(WorkItem.id == item_id, WorkItem.worker == (worker or this_worker()),
                                           WorkItem.status == "running")
                    .values(status="queued", error=error[:4000], heartbeat_at=None))
    session.commit()


def give_up_item(session: Session, item_id: int, audit_id: int, seen: tuple[str, int], reason: str,
                 now: dt.datetime | None = None) -> bool:
    """Fail a work item that used up its attempts, if it is still as ``seen`` (status, attempts), and its audit
    (``too_many_attempts``) in the same commit: a process that died between two commits would leave an audit
    running whose only unfinished item is failed, which nothing then looks at again. False, with nothing failed,
    when another process moved the item first (the claim and the reaper both give up)."""
    done = session.execute(update(WorkItem).where(WorkItem.id == item_id, WorkItem.status == seen[0],
                                                  WorkItem.attempts == seen[1])
                           .values(status="failed", error=reason, finished_at=now or utcnow()))
    if not done.rowcount:
        session.commit()
        return False
    fail_audit(session, audit_id, reason, "too_many_attempts")
    return True


def fail_item_and_audit(session: Session, item_id: int, audit_id: int, message: str, code: str) -> bool:
    """Fail a work item and its audit in one commit (``fail_audit``): a process that died between two commits
    would leave the audit running with its item failed, which the reaper (it looks at running items) never
    revisits."""
    session.execute(update(WorkItem).where(WorkItem.id == item_id, WorkItem.status.in_(("queued", "running")))
                    .values(status="failed", error=message[:4000], finished_at=utcnow()))
    return fail_audit(session, audit_id, message, code)


def fail_audit(session: Session, audit_id: int, message: str, code: str = "audit_failed") -> bool:
    done = session.execute(update(Audit).where(Audit.id == audit_id, Audit.status.in_(("queued", "running")))
                           .values(status="failed", error=message[:4000], error_code=code, finished_at=utcnow()))
    session.execute(update(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.status == "queued")
                    .values(status="cancelled"))
    session.commit()
    if done.rowcount:
        log.error("audit %s: failed: %s", audit_id, message)
    return bool(done.rowcount)


def stage_counts(session: Session, audit_id: int) -> dict[str, tuple[int, int]]:
    """kind -> (done, total) of the audit's work items."""
    rows = session.execute(select(WorkItem.kind, WorkItem.status, func.count()).where(WorkItem.audit_id == audit_id)
                           .group_by(WorkItem.kind, WorkItem.status))
    out: dict[str, list[int]] = {}
    for kind, status, n in rows:
        entry = out.setdefault(kind, [0, 0])
        entry[1] += n
        if status == "done":
            entry[0] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def update_progress(session: Session, audit_id: int) -> float:
    counts = stage_counts(session, audit_id)
    progress = sum(w * (counts[k][0] / counts[k][1]) for k, w in STAGE_WEIGHTS.items()
                   if k in counts and counts[k][1])
    progress = min(progress, 0.99)  # 1.0 only when finalised
    session.execute(update(Audit).where(Audit.id == audit_id, Audit.status == "running", Audit.progress < progress)
                    .values(progress=progress))
    session.commit()
    return progress


@contextmanager
def heartbeat(factory: sessionmaker[Session], item_id: int, interval_s: float,
              worker: str | None = None) -> Iterator[None]:
    """Refresh the item's heartbeat from a background thread while the body runs."""
    worker = worker or this_worker()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                with factory() as session:
                    session.execute(update(WorkItem).where(WorkItem.id == item_id, WorkItem.worker == worker,
                                                           WorkItem.status == "running")
                                    .values(heartbeat_at=utcnow()))
                    session.commit()
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one may work
                log.warning("heartbeat of work item %s failed", item_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{item_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
