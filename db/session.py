"""Engines and sessions: one engine per database URL and process, SQLite tuned for a web process and
workers sharing one file (WAL, busy timeout), pools disposed after fork, and a Flask extension that gives
each app context its own session."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, null_pool: bool = False) -> Engine:
    """Create an engine. SQLite files get WAL mode, a busy timeout and foreign keys; PostgreSQL gets
    ``pool_pre_ping``. ``null_pool`` is for processes that fork (Celery prefork workers)."""
    kwargs: dict[str, Any] = {}
    in_memory = url in ("sqlite://", "sqlite:///:memory:")
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        if in_memory:
            kwargs["poolclass"] = StaticPool  # one shared connection, or each would see its own empty DB
    else:
        kwargs["pool_pre_ping"] = True
    if null_pool and not in_memory:
        kwargs["poolclass"] = NullPool
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _tune_sqlite(engine, in_memory=in_memory)
    return engine


def _tune_sqlite(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy issue BEGIN itself so that "BEGIN IMMEDIATE" style locking is predictable.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN")


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


class BoundDatabase:
    """The engine and session factory of one app (one database URL)."""

    def __init__(self, url: str, *, null_pool: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, null_pool=null_pool)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def dispose_after_fork(self) -> None:
        """Drop pooled connections inherited from the parent without closing the parent's sockets."""
        self.engine.dispose(close=False)


class Database:
    """Flask extension: ``db.init_app(app, bound)``; ``db.session`` is the current app context's session,
    closed at teardown; ``db.bound`` the current app's engine and session factory (for sessions outside
    a request: reaper, heartbeats). State lives in ``app.extensions``, so several apps can coexist."""

    def init_app(self, app: Any, bound: BoundDatabase) -> BoundDatabase:
        app.extensions["quirkscope_db"] = bound
        app.teardown_appcontext(self._teardown)
        return bound

    @property
    def bound(self) -> BoundDatabase:
        from flask import current_app

        return current_app.extensions["quirkscope_db"]

    @property
    def session(self) -> Session:
        from flask import g

        sess = g.get("_quirkscope_session")
        if sess is None:
            sess = self.bound.sessionmaker()
            g._quirkscope_session = sess
        return sess

    @staticmethod
    def _teardown(_exc: BaseException | None) -> None:
        from flask import g

        sess = g.pop("_quirkscope_session", None)
        if sess is not None:
            sess.close()
