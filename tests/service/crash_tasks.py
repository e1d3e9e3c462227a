"""A task for the worker-death tests, loaded by real worker processes through QUIRKSCOPE_TASK_MODULES:
it runs a work item under the same claim protocol as the audit tasks, and kills its worker process on
the attempts the test asks for."""
from __future__ import annotations

import os
import threading

from celery import shared_task

from workers.tasks.flow import _after_reaped
from workers.tasks.runner import run_item


@shared_task(name="tests.crash_item", bind=True, acks_late=True, queue="cpu")
def crash_item(self, audit_id: int, key: int, die_on_attempts: list[int], hang_on_attempts: list[int] = (),  # type: ignore[no-untyped-def,assignment]
               reaped: bool = False) -> str:
    def body(_session, item) -> None:  # type: ignore[no-untyped-def]
        if item.attempts in die_on_attempts:
            os._exit(137)  # the worker process dies mid-task, as under the OOM killer
        if item.attempts in hang_on_attempts:
            threading.Event().wait(600)  # until the test kills the whole worker

    outcome = run_item(self, audit_id, "visualise", key, body)
    _after_reaped(audit_id, reaped)
    return outcome
