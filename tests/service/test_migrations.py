"""Alembic: an empty database upgrades to head (the ORM's tables) and downgrades back to nothing, also when
several processes upgrade it at once."""
from __future__ import annotations

import multiprocessing
from typing import Any

from sqlalchemy import create_engine, inspect, text

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


def _upgrade_when_all_are_ready(url: str, ready: Any, results: Any) -> None:
    """Child process: wait for the others at ``ready``, upgrade, and report ``"ok"`` or the error."""
    try:
        ready.wait(timeout=120)
        upgrade(url)
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(f"{type(exc).__name__}: {exc}".splitlines()[0])


def test_processes_upgrading_a_fresh_database_at_once_all_succeed(database_url: str) -> None:
    """The API and a worker starting together on an empty database both run the upgrade: none may fail,
    and the database ends at head with one version row."""
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    processes = 4
    spawn = multiprocessing.get_context("spawn")
    ready, results = spawn.Barrier(processes), spawn.Queue()
    children = [spawn.Process(target=_upgrade_when_all_are_ready, args=(database_url, ready, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=180) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert outcomes == ["ok"] * processes
    assert [child.exitcode for child in children] == [0] * processes
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_engine(database_url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert versions == [head]
    assert _tables(database_url) == set(Base.metadata.tables)


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
