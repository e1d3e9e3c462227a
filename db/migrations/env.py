"""Alembic environment: migrations run on the connection ``db.migrate`` passes in
``config.attributes["connection"]`` (the one it holds the migration lock on), else against the URL set by
``db.migrate.alembic_config`` (or ``QUIRKSCOPE_DATABASE_URL``), with the ORM metadata for autogenerate; SQLite
uses batch mode."""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ["QUIRKSCOPE_DATABASE_URL"]


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_migrations_on(given)
        return
    engine = create_engine(_url(), poolclass=NullPool)
    with engine.connect() as connection:
        run_migrations_on(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
