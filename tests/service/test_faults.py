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
from tests.service.faults import (
    TINY_CONFUSION,
    TINY_OPTIONS,
    audits_by_status,
    duplicate_rows,
    submit_audit,
    upload_tiny_model,
    wait_finished,
)
from tests.service.stack import running_stack

pytestmark = pytest.mark.reliability

STAGE_TASKS = ["workers.tasks.start_audit", "workers.tasks.advance_audit", "workers.tasks.visualise_chunk",
               "workers.tasks.evaluate_pair", "workers.tasks.score_pair", "workers.tasks.render_report",
               "workers.tasks.finalize_audit"]
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
    (tmp_path / "disk").mkdir()
    env = {**stack_env, "QUIRKSCOPE_TEST_DISK_FULL": "all" if disk == "full" else "2",
           "QUIRKSCOPE_TEST_DISK_FULL_DIR": str(tmp_path / "disk")}
    with running_stack(tmp_path / "home", env) as stack:
        model = upload_tiny_model(stack)  # the API process writes the bundle: its disk is fine
        state = wait_finished(stack, submit_audit(stack, model))
        if disk == "full":
            assert state["status"] == "failed"
            assert "No space left on device" in state["error"]["message"]
            assert "gave up" in state["error"]["message"] or state["error"]["code"] == "transient_error"
        else:
            assert state["status"] == "done", state["error"]
            assert sorted(os.listdir(tmp_path / "disk")) == ["write-0", "write-1"]  # two writes really failed
        root = Path(stack.app.extensions["quirkscope_artifacts"].root)
        partial = [p for p in root.rglob("*") if p.is_file() and p.name.endswith((".tmp", ".part"))]
        assert partial == []
        assert duplicate_rows(stack.app) == 0


# ------------------------------------------------------------------------- servers that go away

LONGER = {"top_k": 2, "seeds": 2, "levels": 1, "steps": 120}  # a visualise stage long enough to hit


def stage_of(app, audit_id: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    from db.models import Audit

    with app.extensions["quirkscope_db"].sessionmaker() as s:
        audit = s.get(Audit, audit_id)
        return audit.status, audit.stage


def database_for_private_servers(tmp_path: Path) -> str:
    return fresh_postgres_schema(PG_URL) if PG_URL else f"sqlite:///{tmp_path / 'home' / 'q.db'}"


def test_redis_restarted_during_an_audit_loses_no_audit(tmp_path: Path) -> None:
    import shutil

    from tests.service.conftest import wait_for
    from tests.service.servers import PrivateRedis

    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server (tests/service/start_servers.sh installs it)")
    redis = PrivateRedis(tmp_path / "redis").start()
    env = {**FAST_REAPER, "QUIRKSCOPE_BROKER_URL": redis.url, "QUIRKSCOPE_RESULT_BACKEND": redis.url,
           "QUIRKSCOPE_DATABASE_URL": database_for_private_servers(tmp_path)}
    try:
        with running_stack(tmp_path / "home", env) as stack:
            model = upload_tiny_model(stack)
            audits = [submit_audit(stack, model, LONGER) for _ in range(2)]
            wait_for(lambda: stage_of(stack.app, audits[0]) == ("running", "visualise"), timeout=120,
                     what="the first audit to be visualising")
            redis.restart()  # every queued message and chord counter is gone
            states = [wait_finished(stack, a, timeout=300) for a in audits]
            assert [s["status"] for s in states] == ["done", "done"], [s["error"] for s in states]
            assert duplicate_rows(stack.app) == 0
    finally:
        redis.stop()


def test_postgresql_unreachable_for_ten_seconds_during_audits_loses_no_audit(tmp_path: Path) -> None:
    import time
    from urllib.parse import urlsplit

    from tests.service.conftest import wait_for
    from tests.service.servers import CuttableProxy

    if not (PG_URL and REDIS_URL):
        pytest.skip("needs QUIRKSCOPE_TEST_DATABASE_URL and QUIRKSCOPE_TEST_REDIS_URL (tests/service/start_servers.sh)")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    pg = urlsplit(PG_URL)
    proxy = CuttableProxy(pg.port or 5432).start()
    url = fresh_postgres_schema(PG_URL).replace(f"{pg.hostname}:{pg.port or 5432}", f"127.0.0.1:{proxy.port}", 1)
    # a heartbeat may be missed for as long as the outage: stale_after above it, as in production
    env = {**FAST_REAPER, "QUIRKSCOPE_STALE_AFTER_S": "15", "QUIRKSCOPE_BROKER_URL": REDIS_URL,
           "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL, "QUIRKSCOPE_DATABASE_URL": url}
    try:
        with running_stack(tmp_path / "home", env) as stack:
            model = upload_tiny_model(stack)
            audits = [submit_audit(stack, model, LONGER) for _ in range(2)]
            wait_for(lambda: stage_of(stack.app, audits[0]) == ("running", "visualise"), timeout=120,
                     what="the first audit to be visualising")
            proxy.cut()
            outage_ends = time.monotonic() + 10
            status, body = stack.request("GET", f"/api/v1/audits/{audits[0]}")
            assert status == 503 and body["error"]["code"] == "database_unavailable", (status, body)
            time.sleep(max(0.0, outage_ends - time.monotonic()))  # the fault lasts 10 s
            proxy.restore()
            states = [wait_finished(stack, a, timeout=300) for a in audits]
            assert [s["status"] for s in states] == ["done", "done"], [s["error"] for s in states]
            assert duplicate_rows(stack.app) == 0
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------- the API restarted

def test_the_api_killed_during_an_upload_and_during_an_audit_loses_nothing(stack_env, tmp_path: Path) -> None:
    import socket

    from tests.service.conftest import wait_for
    from tests.service.faults import tiny_bundle
    from tests.service.servers import ApiProcess
    from tests.service.stack import Stack

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**stack_env, "QUIRKSCOPE_TEST_LOSE_DIR": str(marks)}
    with running_stack(tmp_path / "home", env) as local:
        api = ApiProcess({"QUIRKSCOPE_TEST_DIE_ON_PUBLISH": "workers.tasks.start_audit",
                          "QUIRKSCOPE_TEST_LOSE_DIR": str(marks)}, tmp_path / "api.log").start()
        remote = Stack(api.base_url, local.token, local.app)
        try:
            # 1. killed while an upload streams in: no row, no artifact; the same upload afterwards works
            body = tiny_bundle()
            with socket.create_connection(("127.0.0.1", api.port)) as sock:
                sock.sendall((f"POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {local.token}\r\n"
                              "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 4000000\r\n\r\n"
                              '--b\r\nContent-Disposition: form-data; name="bundle"; filename="t.zip"\r\n\r\n')
                             .encode() + body[:100])
                api.restart()
            store = local.app.extensions["quirkscope_artifacts"]
            assert list(store.keys("")) == [] and local.request("GET", "/api/v1/models")[1]["models"] == []
            model = upload_tiny_model(remote)
            # 2. killed between storing an audit and enqueuing it: the client sees the connection drop
            with pytest.raises(OSError):  # the connection drops with the process (http.client errors are OSErrors)
                remote.request("POST", "/api/v1/audits", {"model_id": model, "confusion": TINY_CONFUSION,
                                                          "options": TINY_OPTIONS})
            assert (marks / "died-sending-workers.tasks.start_audit").exists()
            api.start()
            audits = remote.request("GET", "/api/v1/audits")[1]["audits"]
            assert [a["status"] for a in audits] == ["queued"]
            # 3. killed (and restarted) while that audit runs
            wait_for(lambda: stage_of(local.app, audits[0]["id"])[0] == "running", timeout=120,
                     what="the audit to start (the reaper re-sends its lost start)")
            api.restart()
            state = wait_finished(remote, audits[0]["id"])
            assert state["status"] == "done", state["error"]
            assert duplicate_rows(local.app) == 0 and audits_by_status(local.app) == {"done": 1}
            assert len(list(store.keys("models/"))) == 1
        finally:
            api.kill()
