"""How every task runs its work item: claim the row, heartbeat while the body runs, then finish it, or
release it for a retry with backoff (transient errors), or fail it and its audit with the reason (bad
input, time limit, a bug, or too many attempts). Task bodies only load rows, call the pipeline and store."""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from db.models import WorkItem
from workers import runtime
from workers.engine.errors import QuirkScopeError
from workers.tasks import metrics
from workers.tasks.claims import claim, fail_item_and_audit, finish, heartbeat, release, update_progress

log = logging.getLogger(__name__)

Body = Callable[[Session, WorkItem], Any]


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry: storage and network hiccups, a database or broker that went away, CUDA OOM."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    modules = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    if "OperationalError" in names and modules & {"sqlalchemy", "kombu"}:
        return True
    if "ConnectionError" in names and "redis" in modules:
        return True
    return "OutOfMemoryError" in names and "torch" in modules


def backoff_s(retries: int) -> float:
    conf = runtime.current().settings
    base = min(conf.retry_backoff_s * (2 ** retries), conf.retry_backoff_max_s)
    return base * (0.5 + random.random() / 2)  # jitter


def run_item(task: Task, audit_id: int, kind: str, key: int, body: Body) -> str:
    """Run ``body(session, item)`` for the work item (audit_id, kind, key) under the claim protocol.
    Returns ``done``, ``skipped`` or ``failed``; raises only ``Retry`` (for a transient error). Its wall time,
    outcome and retries go to the worker's metrics (``workers.tasks.metrics``)."""
    started = time.perf_counter()
    try:
        outcome = _run_claimed(task, audit_id, kind, key, body)
    except Retry:
        metrics.task_retried(kind)
        raise
    metrics.task_finished(kind, outcome, time.perf_counter() - started)
    return outcome


def end_snapshot(session: Session) -> None:
    """End the read transaction before a long computation: an SQLite reader whose snapshot predates
    another process's commit (a heartbeat) can no longer write, and would fail with "database is locked"
    at once, without waiting out the busy timeout."""
    session.commit()


def _run_claimed(task: Task, audit_id: int, kind: str, key: int, body: Body) -> str:
    conf = runtime.current().settings
    bound = runtime.current().database
    with bound.sessionmaker() as session:
        got = claim(session, audit_id, kind, key, max_attempts=conf.max_attempts, stale_after_s=conf.stale_after_s)
        if got.outcome == "skip":
            log.info("audit %s: %s %s skipped: %s", audit_id, kind, key, got.reason)
            return "skipped"
        if got.outcome == "give_up":   # the item and the audit are failed already (``claim``)
            return "failed"
        assert got.item_id is not None
        item = session.get(WorkItem, got.item_id)
        # the heartbeat commits while the body runs: a body slow before its first write (a fresh worker's first
        # import of the model stack) would otherwise write from this read's snapshot
        end_snapshot(session)
        log.info("audit %s: %s %s started (attempt %d)", audit_id, kind, key, got.attempt)
        try:
            with heartbeat(bound.sessionmaker, got.item_id, conf.heartbeat_s):
                body(session, item)
        except SoftTimeLimitExceeded:
            session.rollback()
            msg = f"{kind} {key} exceeded the soft time limit of {conf.soft_time_limit_s} s"
            fail_item_and_audit(session, got.item_id, audit_id, msg, "time_limit")
            return "failed"
        except QuirkScopeError as exc:  # the input or the model is wrong: a retry cannot help
            session.rollback()
            fail_item_and_audit(session, got.item_id, audit_id, exc.message, exc.code)
            return "failed"
        except Exception as exc:  # noqa: BLE001 - every other failure is recorded on the rows
            session.rollback()
            text = f"{kind} {key} failed: {type(exc).__name__}: {exc}"
            if is_transient(exc) and got.attempt < conf.max_attempts:
                log.warning("audit %s: %s; retrying", audit_id, text)
                release(session, got.item_id, text)
                raise task.retry(exc=exc, countdown=backoff_s(task.request.retries), max_retries=conf.max_attempts)
            log.exception("audit %s: %s", audit_id, text)
            fail_item_and_audit(session, got.item_id, audit_id, text,
                                "internal_error" if not is_transient(exc) else "transient_error")
            return "failed"
        finish(session, got.item_id)
        update_progress(session, audit_id)
        log.info("audit %s: %s %s done", audit_id, kind, key)
        return "done"
