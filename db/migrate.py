"""Alembic entry points used by the service, the CLI and the tests: upgrade a database to head (or any
revision) and downgrade it, with the script directory shipped inside the package (``db/migrations``).
Processes that migrate the same database at once (the API and a worker starting together) take turns: on
PostgreSQL under a session-level advisory lock held on the connection Alembic migrates with, on SQLite under
an exclusive ``flock`` on a lock file next to the database file."""
from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, make_url, text
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_lock key of schema migrations ("QUIRKSCP" as a big-endian int64); one key for the whole
# database, so migrations of different schemas in it take turns too (they are short)
PG_MIGRATION_LOCK_KEY = 0x515549524B534350


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def sqlite_lock_path(url: str) -> Path | None:
    """The lock file of the SQLite database at ``url`` (``<file>.migrate-lock``); None for an in-memory one."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return path.with_name(path.name + ".migrate-lock")


@contextmanager
def _postgres_lock(conn: Connection) -> Iterator[None]:
    """Hold the migration advisory lock on ``conn``'s session; outside any transaction when yielding, so
    that Alembic runs (and commits) its own."""
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
    conn.commit()
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
        conn.commit()


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing, never deleted: unlinking a lock file lets
    a waiter and a newcomer lock two different files); nothing for None."""
    if path is None:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def migration_connection(url: str) -> Iterator[Connection]:
    """A connection to ``url`` on which this process alone migrates the database until the block ends."""
    engine = create_engine(url, poolclass=NullPool)
    dialect = engine.dialect.name
    try:
        with _file_lock(sqlite_lock_path(url) if dialect == "sqlite" else None), engine.connect() as conn, \
                _postgres_lock(conn) if dialect == "postgresql" else nullcontext():
            yield conn
    finally:
        engine.dispose()


def _run(step: Callable[[Config, str], None], url: str, revision: str) -> None:
    cfg = alembic_config(url)
    with migration_connection(url) as conn:
        cfg.attributes["connection"] = conn  # read by migrations/env.py
        step(cfg, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating the tables of an empty database); safe to run
    from several processes at once (they take turns, and the later ones find nothing left to do)."""
    _run(command.upgrade, url, revision)


def downgrade(url: str, revision: str = "base") -> None:
    _run(command.downgrade, url, revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
