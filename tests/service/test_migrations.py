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


def test_fingerprint_migration_fills_the_flags_already_stored_and_downgrades(database_url: str) -> None:
    """0003_flag_fingerprint: flags stored before it get the fingerprint the workers compute now."""
    from sqlalchemy import text

    from workers.audit.flags import flag_fingerprint

    upgrade(database_url, "0002")
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, trusted_pt2, created_at) VALUES (1, 'p', false, "
                          "CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO model_bundles (id, project_id, sha256, name, version, format, classes, "
                          "manifest, size_bytes, artifact_key, created_at) VALUES (1, 1, 'x', 'm', '1', 'onnx', "
                          "'[]', '{}', 1, 'k', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO audits (id, project_id, model_id, status, stage, options, confusion, "
                          "progress, timings, plan, created_at) VALUES (1, 1, 1, 'done', 'finished', '{}', '{}', 1, "
                          "'{}', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO class_pairs (id, audit_id, rank, class_a, class_b, confusion, explicit, "
                          "artifacts, scored) VALUES (1, 1, 1, 'B', 'A', '{}', false, '{}', true)"))
        conn.execute(text("INSERT INTO flags (id, pair_id, audit_id, code, stream, severity, message, detail) VALUES "
                          "(1, 1, 1, 'LOCALIZED_CUE', 'motion', 'high', 'm', '{\"class_name\": \"B\"}'), "
                          "(2, 1, 1, 'SHARED_EVIDENCE', '', 'medium', 'm', '{}')"))
    upgrade(database_url)
    assert current_revision(database_url) == "0003_flag_fingerprint"
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, fingerprint FROM flags ORDER BY id")).all())
    assert stored == {1: flag_fingerprint("A", "B", "LOCALIZED_CUE", "motion", "B"),
                      2: flag_fingerprint("A", "B", "SHARED_EVIDENCE", None, None)}
    downgrade(database_url, "0002")
    assert "fingerprint" not in {c["name"] for c in inspect(engine).get_columns("flags")}
    engine.dispose()
