"""Real worker processes (``celery worker``, prefork) on the embedded filesystem broker and, when
available, Redis: a task whose worker process dies is run again; one that kills its worker every time
is failed after a bounded number of attempts with the reason; work of a worker killed outright is
re-enqueued by the reaper."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from db.migrate import upgrade
from db.models import Audit, WorkItem
from service.commands import reap_once, spawn_worker, stop_process
from tests.service.conftest import REDIS_URL, stored_model, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["filesystem", "redis"])
def worker_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"QUIRKSCOPE_HOME": str(tmp_path / "home"),
           "QUIRKSCOPE_DATABASE_URL": f"sqlite:///{tmp_path / 'home' / 'q.db'}",
           "QUIRKSCOPE_TASK_MODULES": "tests.service.crash_tasks",
           "QUIRKSCOPE_HEARTBEAT_S": "0.5", "QUIRKSCOPE_STALE_AFTER_S": "3", "QUIRKSCOPE_MAX_ATTEMPTS": "3",
           "QUIRKSCOPE_SECRET_KEY": "test", "PYTHONPATH": str(REPO)}
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("Redis tests need QUIRKSCOPE_TEST_REDIS_URL (see tests/service/start_servers.sh)")
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        env.update({"QUIRKSCOPE_BROKER_URL": REDIS_URL, "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL})
    (tmp_path / "home").mkdir()
    return env


@pytest.fixture
def worker_app(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    for key, value in worker_env.items():
        monkeypatch.setenv(key, value)
    from service.app import create_app

    upgrade(worker_env["QUIRKSCOPE_DATABASE_URL"])
    app = create_app({"TESTING": True})
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


def start_worker(tmp_path: Path, env: dict[str, str], name: str):  # type: ignore[no-untyped-def]
    old = os.getcwd()
    os.chdir(REPO)
    try:
        return spawn_worker(["cpu"], env=env, log_path=str(tmp_path / f"{name}.log"))
    finally:
        os.chdir(old)


def make_item(app, die: list[int], hang: list[int] = ()) -> tuple[int, int]:  # type: ignore[no-untyped-def,assignment]
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        model = stored_model(s)
        audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status="running",
                      stage="visualise")
        s.add(audit)
        s.flush()
        args = [audit.id, 0, die, list(hang)]
        item = WorkItem(audit_id=audit.id, kind="visualise", key=0,
                        payload={"task": "tests.crash_item", "args": args, "queue": "cpu"})
        s.add(item)
        s.commit()
        app.extensions["celery"].send_task("tests.crash_item", args=args, queue="cpu")
        return audit.id, item.id


def row(app, model, ident):  # type: ignore[no-untyped-def]
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        return s.get(model, ident)


def test_task_whose_worker_process_died_is_redelivered_and_completes(worker_app, worker_env, tmp_path) -> None:
    proc = start_worker(tmp_path, worker_env, "w1")
    try:
        _, item_id = make_item(worker_app, die=[1])
        item = wait_for(lambda: (r := row(worker_app, WorkItem, item_id)).status == "done" and r, timeout=90,
                        what="the item to complete after its worker died once")
        assert item.attempts == 2
    finally:
        stop_process(proc)


def test_task_that_kills_its_worker_every_time_fails_after_max_attempts(worker_app, worker_env, tmp_path) -> None:
    proc = start_worker(tmp_path, worker_env, "w1")
    try:
        audit_id, item_id = make_item(worker_app, die=[1, 2, 3, 4, 5])
        item = wait_for(lambda: (r := row(worker_app, WorkItem, item_id)).status == "failed" and r, timeout=120,
                        what="the poison item to be failed")
        assert item.attempts == 3
        audit = row(worker_app, Audit, audit_id)
        assert audit.status == "failed" and audit.error_code == "too_many_attempts"
        assert "gave up after 3 attempts" in audit.error
    finally:
        stop_process(proc)


def test_work_of_a_killed_worker_is_reenqueued_by_the_reaper(worker_app, worker_env, tmp_path) -> None:
    first = start_worker(tmp_path, worker_env, "w1")
    second = None
    try:
        _, item_id = make_item(worker_app, die=[], hang=[1])
        wait_for(lambda: row(worker_app, WorkItem, item_id).status == "running", timeout=60, what="the claim")
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker, parent and child, dies at once
        first.wait(10)
        second = start_worker(tmp_path, worker_env, "w2")
        report = wait_for(lambda: (r := reap_once(worker_app))["requeued"] and r, timeout=30,
                          what="the reaper to notice the dead worker")
        assert report["requeued"] == [item_id]
        item = wait_for(lambda: (r := row(worker_app, WorkItem, item_id)).status == "done" and r, timeout=90,
                        what="the re-enqueued item to complete")
        assert item.attempts == 2
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)
