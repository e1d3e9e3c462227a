"""``/metrics`` of the API (read from the rows and the broker at scrape time; a bearer token with the
``metrics`` scope, or the configured metrics token, unless ``QUIRKSCOPE_METRICS_PUBLIC`` opens it) and the
worker-side metrics (task durations, failures, retries, sample-iterations per GPU slot)."""
from __future__ import annotations

from typing import Any

import pytest

from db.models import Audit, ClassPair, Flag, ModelBundle, Project, WorkItem
from tests.service.conftest import auth, make_settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, sorted labels) -> value of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def add_audit(session: Any, status: str, flags: list[str], chunks: int) -> int:
    project = session.query(Project).filter_by(name="p").one_or_none() or Project(name="p")
    session.add(project)
    session.flush()
    model = ModelBundle(project_id=project.id, sha256=f"{status:0<64}"[:64], name="m", version="1", format="onnx",
                        classes=["a", "b"], manifest={}, size_bytes=1, artifact_key="models/x.zip")
    session.add(model)
    session.flush()
    audit = Audit(project_id=project.id, model_id=model.id, options={}, confusion={}, status=status)
    session.add(audit)
    session.flush()
    pair = ClassPair(audit_id=audit.id, rank=1, class_a="a", class_b="b", confusion={})
    session.add(pair)
    session.flush()
    session.add_all([Flag(pair_id=pair.id, audit_id=audit.id, code=c, stream="appearance", severity="medium",
                          message="m") for c in flags])
    session.add_all([WorkItem(audit_id=audit.id, kind="visualise", key=i, status="done") for i in range(chunks)])
    session.commit()
    return audit.id


def test_metrics_count_audits_by_status_work_items_flags_and_queued_messages(app, client, db_session,
                                                                            make_token) -> None:
    scraper = auth(make_token("ops", "metrics"))
    add_audit(db_session, "done", ["LOCALIZED_CUE", "CONTEXT_CUE"], chunks=3)
    add_audit(db_session, "failed", ["LOCALIZED_CUE"], chunks=1)
    waiting = samples(client.get("/metrics", headers=scraper).get_data(as_text=True))  # memory:// queues outlive a test
    app.extensions["celery"].send_task("workers.tasks.visualise_chunk", args=(1, 0), queue="gpu")
    resp = client.get("/metrics", headers=scraper)
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    got = samples(resp.get_data(as_text=True))
    assert got[("quirkscope_audits", (("status", "done"),))] == 1
    assert got[("quirkscope_audits", (("status", "failed"),))] == 1
    assert got[("quirkscope_audits", (("status", "running"),))] == 0
    assert got[("quirkscope_work_items", (("kind", "visualise"), ("status", "done")))] == 4
    assert got[("quirkscope_flags", (("code", "LOCALIZED_CUE"),))] == 2
    assert got[("quirkscope_flags", (("code", "CONTEXT_CUE"),))] == 1
    assert got[("quirkscope_models", ())] == 2
    assert got[("quirkscope_broker_up", ())] == 1
    for queue, added in (("gpu", 1), ("cpu", 0)):
        key = ("quirkscope_queue_depth", (("queue", queue),))
        assert got[key] - waiting[key] == added


def test_metrics_by_default_want_a_token_with_the_metrics_scope(client, make_token) -> None:
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["error"]["field"] == "Authorization"
    assert "quirkscope_audits" not in refused.get_data(as_text=True)
    assert client.get("/metrics", headers=auth("qs_unknown")).status_code == 401
    lacking = client.get("/metrics", headers=auth(make_token("alpha", "submit,read,review")))
    assert lacking.status_code == 403 and "'metrics' scope" in lacking.get_json()["error"]["message"]
    allowed = client.get("/metrics", headers=auth(make_token("ops", "metrics")))
    assert allowed.status_code == 200 and "quirkscope_audits" in allowed.get_data(as_text=True)


def test_a_logged_in_session_does_not_open_metrics(client, make_token) -> None:
    client.post("/login", data={"token": make_token("ops", "submit,read,review,metrics")})
    assert client.get("/metrics").status_code == 401  # scrapers send a bearer token; no cookie auth here


def test_metrics_public_setting_opens_metrics_to_anonymous_scrapes(tmp_path, database_url) -> None:
    from db.migrate import upgrade
    from service.app import create_app
    from workers.settings import load_settings

    assert load_settings(env={"QUIRKSCOPE_METRICS_PUBLIC": "1"}, home=tmp_path, secret_key="x").metrics_public
    assert not load_settings(env={}, home=tmp_path, secret_key="x").metrics_public
    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, metrics_public=True))
    try:
        assert app.test_client().get("/metrics").status_code == 200
    finally:
        app.extensions["quirkscope_db"].engine.dispose()


@pytest.fixture
def guarded_app(tmp_path, database_url):  # type: ignore[no-untyped-def]
    from db.migrate import upgrade
    from service.app import create_app

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, metrics_token="scrape-me"))
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


def test_metrics_take_the_configured_bearer_token_or_a_metrics_scope_token(guarded_app) -> None:
    from service.auth import issue_token

    client = guarded_app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["error"]["field"] == "Authorization"
    assert client.get("/metrics", headers=auth("wrong")).status_code == 401
    assert client.get("/metrics", headers=auth("scrape-me")).status_code == 200
    with guarded_app.app_context():
        scoped = issue_token(guarded_app.extensions["quirkscope_db"].sessionmaker(), "ops", "metrics")
    assert client.get("/metrics", headers=auth(scoped)).status_code == 200


def test_worker_metrics_record_durations_failures_retries_and_sample_iterations_per_gpu(monkeypatch) -> None:
    from prometheus_client import generate_latest

    from workers.tasks import metrics

    before = samples(generate_latest(metrics.registry()).decode())

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    metrics.task_finished("visualise", "done", 2.5)
    metrics.task_finished("score", "failed", 0.2)
    metrics.task_retried("score")
    metrics.visualisation_finished(objectives=8, steps=16, seconds=2.0, device="cuda")
    after = samples(generate_latest(metrics.registry()).decode())
    assert delta("quirkscope_task_duration_seconds_count", stage="visualise", outcome="done") == 1
    assert delta("quirkscope_task_duration_seconds_sum", stage="visualise", outcome="done") == pytest.approx(2.5)
    assert delta("quirkscope_task_failures_total", stage="score") == 1
    assert delta("quirkscope_task_failures_total", stage="visualise") == 0
    assert delta("quirkscope_task_retries_total", stage="score") == 1
    assert delta("quirkscope_sample_iterations_total", gpu="3", device="cuda") == 128
    assert after[("quirkscope_sample_iterations_per_second", (("device", "cuda"), ("gpu", "3")))] == 64


def test_queue_depth_counts_the_messages_waiting_in_redis(tmp_path) -> None:
    from service.metrics import queue_depths
    from tests.service.conftest import REDIS_URL
    from workers.celery_app import create_celery_app
    from workers.runtime import WorkerContext
    from workers.settings import load_settings

    if not REDIS_URL:
        pytest.skip("needs QUIRKSCOPE_TEST_REDIS_URL (tests/service/start_servers.sh)")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = load_settings(env={}, home=tmp_path, broker_url=REDIS_URL, result_backend=REDIS_URL, secret_key="x",
                             database_url=f"sqlite:///{tmp_path / 'q.db'}")
    celery = create_celery_app(settings, WorkerContext.from_settings(settings))
    assert queue_depths(celery) == {"gpu": 0, "cpu": 0}
    for chunk in range(3):
        celery.send_task("workers.tasks.visualise_chunk", args=(1, chunk), queue="gpu")
    celery.send_task("workers.tasks.advance_audit", args=(1,), queue="cpu")
    assert queue_depths(celery) == {"gpu": 3, "cpu": 1}
    redis.Redis.from_url(REDIS_URL).flushdb()
