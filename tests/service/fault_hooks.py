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


def _install_full_disk() -> None:
    """With ``QUIRKSCOPE_TEST_DISK_FULL`` = ``all`` (or a number n), every file (or each of the first n files, counted
    over all processes) written through ``workers.engine.files`` (the one atomic-write path: the artifact store,
    rendering, reports) fails half way with ENOSPC, as on a full disk. The n writes are counted with marker files
    created with O_EXCL under ``QUIRKSCOPE_TEST_DISK_FULL_DIR``: a count per process would start again in every
    new pool process (a worker replaces its child after ``max_tasks_per_child`` tasks), and one work item could
    then meet more full-disk writes than it has attempts."""
    spec = os.environ.get("QUIRKSCOPE_TEST_DISK_FULL")
    if not spec:
        return
    import builtins
    import errno

    import workers.engine.files

    full_writes = None if spec == "all" else int(spec)
    markers = Path(os.environ["QUIRKSCOPE_TEST_DISK_FULL_DIR"]) if full_writes is not None else None
    real_open = builtins.open

    def disk_is_full() -> bool:
        if markers is None:
            return True
        for n in range(full_writes or 0):
            try:
                os.close(os.open(markers / f"write-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return True
            except FileExistsError:
                continue
        return False

    class FullDiskFile:
        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: bytes) -> int:
            self._fh.write(bytes(data)[: len(data) // 2])
            self._fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

        def __enter__(self) -> "FullDiskFile":
            return self

        def __exit__(self, *exc: Any) -> None:
            self._fh.close()

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, mode, *args, **kwargs)
        if "w" in mode and disk_is_full():
            return FullDiskFile(fh)
        return fh

    workers.engine.files.open = full_open  # type: ignore[attr-defined]


_install_full_disk()


@before_task_publish.connect
def _die_while_publishing(sender: str | None = None, **_: Any) -> None:
    """With ``QUIRKSCOPE_TEST_DIE_ON_PUBLISH`` naming a task, the first process to send it dies instead (after
    its database commit, before the message leaves): the API killed between storing an audit and enqueuing it."""
    if sender != os.environ.get("QUIRKSCOPE_TEST_DIE_ON_PUBLISH"):
        return
    marker = Path(os.environ["QUIRKSCOPE_TEST_LOSE_DIR"]) / f"died-sending-{sender}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(137)
