"""Alembic: an empty database upgrades to head (the ORM's tables) and downgrades back to nothing."""
from __future__ import annotations

from sqlalchemy import create_engine, inspect

from db.migrate import current_revision, downgrade, upgrade
from db.models import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_empty_database_upgrades_to_head_and_back_down(database_url: str) -> None:
    assert _tables(database_url) == set()
    upgrade(database_url)
    assert _tables(database_url) == set(Base.metadata.tables)
    assert current_revision(database_url) is not None
    downgrade(database_url, "base")
    assert _tables(database_url) == set()
    assert current_revision(database_url) is None


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
