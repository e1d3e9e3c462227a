"""What a task needs from the process it runs in: the settings, the database (engine + session factory) and
the artifact store, bundled as one ``WorkerContext`` that the Celery app carries. Built from settings alone,
without Flask: the web process makes one for the Celery app it enqueues with, a worker process makes its own."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from db.artifacts import ArtifactStore, store_from_url
from db.session import BoundDatabase
from workers.settings import Settings


@dataclass
class WorkerContext:
    settings: Settings
    database: BoundDatabase
    artifacts: ArtifactStore

    @classmethod
    def from_settings(cls, settings: Settings, *, null_pool: bool = False) -> "WorkerContext":
        """``null_pool``: no pooled connections, for processes that fork (Celery prefork workers)."""
        return cls(settings, BoundDatabase(settings.database_url, null_pool=null_pool),
                   artifact_store_for(settings))


def artifact_store_for(settings: Settings) -> ArtifactStore:
    """The artifact store that ``settings`` name (a local folder, a shared volume, or an S3 bucket)."""
    return store_from_url(settings.artifacts_url, endpoint_url=settings.artifacts_endpoint_url,
                          region=settings.artifacts_region,
                          multipart_bytes=settings.artifacts_multipart_mb * 1024 * 1024)


_active: ContextVar[WorkerContext | None] = ContextVar("quirkscope_worker_context", default=None)


@contextlib.contextmanager
def activate(context: WorkerContext) -> Iterator[WorkerContext]:
    """Make ``context`` the current one for the duration of a task (or a test)."""
    token = _active.set(context)
    try:
        yield context
    finally:
        _active.reset(token)


def current() -> WorkerContext:
    """The active context: the one a running task activated, else the one of the default Celery app."""
    context = _active.get()
    if context is not None:
        return context
    from celery import current_app

    context = getattr(current_app, "quirkscope_context", None)
    if context is None:
        raise RuntimeError("no worker context: build the Celery app with workers.celery_app.create_celery_app")
    return context
