"""Fixtures of the service tests: an app per test on a migrated database (SQLite always; PostgreSQL too
when ``QUIRKSCOPE_TEST_DATABASE_URL`` is set), tokens, and tiny bundles built in memory."""
from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from db.migrate import upgrade
from workers.settings import Settings, load_settings

PG_URL = os.environ.get("QUIRKSCOPE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("QUIRKSCOPE_TEST_REDIS_URL")
CLASSES = ["Archery", "Bowling", "Cycling", "Diving"]


def fresh_postgres_schema(url: str) -> str:
    """A new, empty schema in the test database; the URL returned puts it first on the search path."""
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'quirkscope.db'}"
    if not PG_URL:
        pytest.skip("PostgreSQL tests need QUIRKSCOPE_TEST_DATABASE_URL (see tests/service/start_servers.sh)")
    return fresh_postgres_schema(PG_URL)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values = {"home": tmp_path / "home", "database_url": database_url, "broker_url": "memory://",
              "result_backend": "cache+memory://", "artifacts_url": f"file://{tmp_path / 'artifacts'}",
              "secret_key": "test-secret", "cookie_secure": False}
    values.update(overrides)
    return load_settings(env={}, **values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    upgrade(database_url)
    return make_settings(tmp_path, database_url)


@pytest.fixture
def app(settings: Settings):
    from service.app import create_app

    app = create_app({"TESTING": True}, settings=settings)
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_token(app) -> Callable[..., str]:
    from service.auth import issue_token

    def make(project: str = "alpha", scopes: str = "submit,read,review") -> str:
        with app.app_context():
            return issue_token(app.extensions["quirkscope_db"].sessionmaker(), project, scopes)

    return make


def stored_model(session: Any, project: str = "p") -> Any:
    """A new project and a minimal stored model row of it (two classes, no real bundle), flushed, for tests that
    need audit rows to hang off; returns the ``ModelBundle``."""
    from db.models import ModelBundle, Project

    proj = Project(name=project)
    session.add(proj)
    session.flush()
    model = ModelBundle(project_id=proj.id, sha256="0" * 64, name="m", version="1", format="onnx",
                        classes=["a", "b"], manifest={}, size_bytes=1, artifact_key="models/x.zip")
    session.add(model)
    session.flush()
    return model


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def manifest(name: str = "tiny-twostream", version: str = "1.0", classes: list[str] | None = None) -> dict:
    return {"name": name, "version": version, "classes": classes or CLASSES, "format": "onnx",
            "inputs": [{"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, 4, 16, 16]},
                       {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, 4, 16, 16]}]}


def bundle_bytes(members: dict[str, bytes] | None = None, **manifest_kwargs: Any) -> bytes:
    """A bundle zip for the web process's checks (the model member is not parsed there)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest(**manifest_kwargs)))
        for name, data in (members if members is not None else {"model.onnx": b"onnx-bytes"}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload(client, token: str, data: bytes) -> Any:
    return client.post("/api/v1/models", headers=auth(token),
                       data={"bundle": (io.BytesIO(data), "bundle.zip")}, content_type="multipart/form-data")


CONFUSION = {"classes": CLASSES, "matrix": [[50, 30, 2, 0], [20, 60, 1, 1], [0, 1, 80, 5], [0, 0, 9, 70]]}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture
def db_session(app) -> Iterator[Any]:
    """A session outside any app context (an open app context would be shared by the test requests)."""
    session = app.extensions["quirkscope_db"].sessionmaker()
    yield session
    session.close()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The reference model (trained once per session, seed 0) as an uploadable bundle + its confusion."""
    from workers.engine.reference.train import train_reference, write_reference

    bundle, confusion = write_reference(train_reference(0), tmp_path_factory.mktemp("reference"))
    return bundle, json.loads(confusion.read_text())
