"""Faults, with real worker processes (``gpu`` and ``cpu`` queues), the API on a real server and the reaper:
every audit either completes or ends ``failed`` with a reason; none is lost, no row is written twice.
Each test is one row of the fault table in docs/reliability.md (the worker killed with SIGKILL is
tests/service/test_worker_recovery.py). On the embedded stack (SQLite, filesystem broker) and on Redis +
PostgreSQL when the test servers are configured."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import tests.service.fault_hooks  # noqa: F401  (the test process publishes too)
from tests.service.conftest import PG_URL, REDIS_URL, fresh_postgres_schema
from tests.service.faults import (audits_by_status, duplicate_rows, submit_audit, upload_tiny_model,
                                  wait_finished)
from tests.service.stack import running_stack

pytestmark = pytest.mark.reliability

STAGE_TASKS = ["workers.tasks.start_audit", "workers.tasks.advance_audit", "workers.tasks.visualise_chunk",
               "workers.tasks.score_pair", "workers.tasks.render_report", "workers.tasks.finalize_audit"]
FAST_REAPER = {"QUIRKSCOPE_STALE_AFTER_S": "3", "QUIRKSCOPE_REAPER_INTERVAL_S": "1", "QUIRKSCOPE_HEARTBEAT_S": "0.5",
               "QUIRKSCOPE_RETRY_BACKOFF_S": "1", "QUIRKSCOPE_TASK_MODULES": "tests.service.fault_hooks"}


@pytest.fixture(params=["embedded", "redis-postgres"])
def stack_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "embedded":
        return dict(FAST_REAPER)
    if not (REDIS_URL and PG_URL):
        pytest.skip("needs QUIRKSCOPE_TEST_REDIS_URL and QUIRKSCOPE_TEST_DATABASE_URL (tests/service/start_servers.sh)")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return {**FAST_REAPER, "QUIRKSCOPE_BROKER_URL": REDIS_URL, "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL,
            "QUIRKSCOPE_DATABASE_URL": fresh_postgres_schema(PG_URL),
            "QUIRKSCOPE_ARTIFACTS_URL": f"file://{tmp_path / 'shared-artifacts'}"}


def test_a_message_lost_between_fetch_and_claim_at_every_stage_is_sent_again(stack_env, tmp_path: Path) -> None:
    lost = tmp_path / "lost"
    lost.mkdir()
    env = {**stack_env, "QUIRKSCOPE_TEST_LOSE_TASKS": ",".join(STAGE_TASKS), "QUIRKSCOPE_TEST_LOSE_DIR": str(lost)}
    with running_stack(tmp_path / "home", env) as stack:
        audit_id = submit_audit(stack, upload_tiny_model(stack))
        state = wait_finished(stack, audit_id)
        assert state["status"] == "done", state["error"]
        assert sorted(os.listdir(lost)) == sorted(STAGE_TASKS)  # each stage really lost a message
        assert duplicate_rows(stack.app) == 0
        assert audits_by_status(stack.app) == {"done": 1}


def test_a_model_that_returns_nan_or_raises_mid_audit_fails_its_audit_with_the_reason(stack_env,
                                                                                      tmp_path: Path) -> None:
    from tests import hostile

    with running_stack(tmp_path / "home", stack_env) as stack:
        good = submit_audit(stack, upload_tiny_model(stack))
        nan = submit_audit(stack, upload_tiny_model(stack, hostile.onnx_graph(nan_off_zero=True), name="nan-model"))
        raises = submit_audit(stack, upload_tiny_model(stack, hostile.onnx_graph(batch_of_two_only=True),
                                                       name="raising-model"))
        states = {name: wait_finished(stack, audit) for name, audit in
                  (("good", good), ("nan", nan), ("raises", raises))}
        assert states["good"]["status"] == "done", states["good"]["error"]
        assert states["nan"]["status"] == "failed"
        assert states["nan"]["error"]["code"] == "model_output_invalid"
        assert "NaN or infinite" in states["nan"]["error"]["message"]
        assert states["raises"]["status"] == "failed"
        assert "RuntimeError" in states["raises"]["error"]["message"]
        assert "is invalid for input of size" in states["raises"]["error"]["message"]
        _, report = stack.request("GET", f"/api/v1/audits/{good}/pairs")
        assert report["audit"]["status"] == "done" and all(p["scored"] for p in report["pairs"])
        assert duplicate_rows(stack.app) == 0
        assert audits_by_status(stack.app) == {"done": 1, "failed": 2}


@pytest.mark.parametrize("disk", ["full", "full-for-two-writes"])
def test_a_full_disk_under_the_artifact_store_fails_or_retries_the_audit_and_leaves_no_partial_files(
        stack_env, disk: str, tmp_path: Path) -> None:
    env = {**stack_env, "QUIRKSCOPE_TEST_DISK_FULL": "all" if disk == "full" else "2"}
    with running_stack(tmp_path / "home", env) as stack:
        model = upload_tiny_model(stack)  # the API process writes the bundle: its disk is fine
        state = wait_finished(stack, submit_audit(stack, model))
        if disk == "full":
            assert state["status"] == "failed"
            assert "No space left on device" in state["error"]["message"]
            assert "gave up" in state["error"]["message"] or state["error"]["code"] == "transient_error"
        else:
            assert state["status"] == "done", state["error"]
        root = Path(stack.app.extensions["quirkscope_artifacts"].root)
        partial = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
        assert partial == []
        assert duplicate_rows(stack.app) == 0
