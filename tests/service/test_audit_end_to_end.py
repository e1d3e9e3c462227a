"""An audit of the reference model submitted over HTTP to a running service (API server, separate
``gpu`` and ``cpu`` worker processes) reaches ``done``; its pairs and flags match an in-process run of
the pipeline (``run_local_audit``) with the same seeds. Embedded topology (SQLite + filesystem broker)
always; Redis + PostgreSQL when the test servers are up (tests/service/start_servers.sh)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import PG_URL, REDIS_URL, fresh_postgres_schema, wait_for  # noqa: F401 (reference)
from tests.service.stack import running_stack

OPTIONS = {"top_k": 3, "seeds": 2, "levels": 2, "steps": 16}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def local_report(reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from workers.audit.confusion import parse_confusion
    from workers.audit.options import AuditOptions
    from workers.audit.pipeline import run_local_audit
    from workers.engine.bundle import load_bundle

    model = load_bundle(reference[0])
    cm = parse_confusion(reference[1], model.manifest.classes)
    return run_local_audit(model, cm, AuditOptions(**OPTIONS), tmp_path_factory.mktemp("local"), device="cpu")


def summary(report: dict) -> tuple[list, set]:
    pairs = [(p["rank"], p["a"], p["b"]) for p in report["pairs"]]
    flags = {(p["a"], p["b"], f["code"], f["stream"]) for p in report["pairs"] for f in p["flags"]}
    return pairs, flags


@pytest.fixture(params=["embedded", "redis-postgres"])
def stack_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "embedded":
        return {}
    if not (REDIS_URL and PG_URL):
        pytest.skip("needs QUIRKSCOPE_TEST_REDIS_URL and QUIRKSCOPE_TEST_DATABASE_URL (tests/service/start_servers.sh)")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return {"QUIRKSCOPE_BROKER_URL": REDIS_URL, "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL,
            "QUIRKSCOPE_DATABASE_URL": fresh_postgres_schema(PG_URL),
            "QUIRKSCOPE_ARTIFACTS_URL": f"file://{tmp_path / 'shared-artifacts'}"}


def run_audit_over_http(stack, reference) -> tuple[int, dict]:
    bundle, confusion = reference
    status, model = stack.request("POST", "/api/v1/models", files={"bundle": ("model.zip", bundle.read_bytes())})
    assert status == 201, model
    status, created = stack.request("POST", "/api/v1/audits",
                                    {"model_id": model["id"], "confusion": confusion, "options": OPTIONS})
    assert status == 202, created
    audit_id = created["id"]
    progress_seen: list[float] = []

    def finished() -> dict | None:
        _, state = stack.request("GET", f"/api/v1/audits/{audit_id}")
        progress_seen.append(state["progress"])
        return state if state["status"] in ("done", "failed", "cancelled") else None

    state = wait_for(finished, timeout=600, interval=0.5, what=f"audit {audit_id} to finish")
    assert state["status"] == "done", state["error"]
    assert state["progress"] == 1.0 and progress_seen == sorted(progress_seen)
    _, report = stack.request("GET", f"/api/v1/audits/{audit_id}/pairs")
    return audit_id, report


def test_audit_over_http_reaches_done_and_matches_the_in_process_run(stack_env, reference, local_report,
                                                                     tmp_path: Path) -> None:
    with running_stack(tmp_path / "home", stack_env) as stack:
        audit_id, report = run_audit_over_http(stack, reference)
        assert summary(report) == summary(local_report)
        for pair in report["pairs"]:
            assert pair["scored"] and pair["scores"]
            clip = next(iter(pair["artifacts"]["clips"][pair["a"]].values()))[0]
            status, body = stack.request("GET", clip["gif"])
            assert status == 200 and body[:4] == b"GIF8"
            status, _ = stack.request("GET", pair["artifacts"]["difference"]["appearance"]["png"])
            assert status == 200
        status, html = stack.request("GET", f"/api/v1/audits/{audit_id}/report")
        assert status == 200 and b"QuirkScope audit" in html
