"""Fuzzing every operation of the service's own OpenAPI document (``/api/v1/openapi.json``) with schemathesis,
in process (WSGI), bounded by a number of examples per operation: no server error, and every response's
status code, content type and body match what the document declares. A project holding a model, an audit,
a pair and a flag makes some of the generated ids hit real rows. ``QUIRKSCOPE_FUZZ_EXAMPLES`` raises the bound
(``tests/benchmarks/reliability_figures.py`` runs it with more)."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from db.migrate import upgrade  # noqa: E402
from tests import hostile  # noqa: E402
from tests.service.conftest import CONFUSION, auth, make_settings  # noqa: E402

EXAMPLES = int(os.environ.get("QUIRKSCOPE_FUZZ_EXAMPLES", "30"))
LOG = os.environ.get("QUIRKSCOPE_FUZZ_LOG")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def build_fuzz_app():  # type: ignore[no-untyped-def]
    """The app under test, on SQLite in a fresh folder, with one project's model and audit."""
    from service.app import create_app
    from service.auth import issue_token

    root = Path(tempfile.mkdtemp(prefix="quirkscope-fuzz-"))
    url = f"sqlite:///{root / 'q.db'}"
    upgrade(url)
    app = create_app({"TESTING": True}, settings=make_settings(root, url, max_upload_bytes=1024 * 1024,
                                                               max_json_bytes=1024 * 1024))
    with app.app_context():
        token = issue_token(app.extensions["quirkscope_db"].sessionmaker(), "alpha", "submit,read,review")
    client = app.test_client()
    model = client.post("/api/v1/models", headers=auth(token), content_type="multipart/form-data",
                        data={"bundle": (io.BytesIO(hostile.bundle()), "b.zip")}).json["id"]
    assert client.post("/api/v1/audits", headers=auth(token),
                       json={"model_id": model, "confusion": CONFUSION}).status_code == 202
    app.config["FUZZ_TOKEN"] = token
    app.config["FUZZ_ROOT"] = root
    return app


# schemathesis' lazy (fixture) schemas need pytest's subtests, which pytest 9 changed: the schema is loaded
# when the module is collected instead, from an app of its own.
APP = build_fuzz_app()
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)


def teardown_module() -> None:
    APP.extensions["quirkscope_db"].engine.dispose()
    shutil.rmtree(APP.config["FUZZ_ROOT"], ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_server_error_and_documented_answers(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call_and_validate(headers=auth(APP.config["FUZZ_TOKEN"]), checks=CHECKS)
    if LOG:  # one line per request, for tests/benchmarks/reliability_figures.py
        with open(LOG, "a") as fh:
            fh.write(f"{case.operation.method.upper()} {case.operation.path} {response.status_code}\n")
