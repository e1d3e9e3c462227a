"""Fault injection for the fault tests, loaded into the worker processes through ``QUIRKSCOPE_TASK_MODULES``
and imported by the test process (which publishes too): with ``QUIRKSCOPE_TEST_LOSE_TASKS`` set, the first
message of each named task, whichever process sends it, is published already expired, so the worker that
fetches it throws it away without running it: a message lost between fetch and claim. A marker file per task
(created with O_EXCL under ``QUIRKSCOPE_TEST_LOSE_DIR``) makes it exactly one message across processes."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish


@before_task_publish.connect
def _lose_the_first_message(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    wanted = {n.strip() for n in os.environ.get("QUIRKSCOPE_TEST_LOSE_TASKS", "").split(",") if n.strip()}
    if sender not in wanted or headers is None:
        return
    marker = Path(os.environ["QUIRKSCOPE_TEST_LOSE_DIR"]) / sender
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    headers["expires"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
