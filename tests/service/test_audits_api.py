"""Audit routes without workers (memory broker, nothing consumes): creation validates and ranks, status,
listing across a model's versions, report JSON, comparison, review, cancel and delete, OpenAPI."""
from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from db.models import Audit, ClassPair, Flag, WorkItem
from tests.service.conftest import CONFUSION, auth, bundle_bytes, upload


@pytest.fixture
def submitted(client, make_token):
    token = make_token()
    model = upload(client, token, bundle_bytes()).json

    def submit(**body):
        payload = {"model_id": model["id"], "confusion": CONFUSION, "options": {"top_k": 2, "steps": 8}, **body}
        return client.post("/api/v1/audits", headers=auth(token), json=payload)

    return token, model, submit


def test_create_audit_returns_202_location_and_stores_ranked_pairs(client, submitted, db_session) -> None:
    token, _, submit = submitted
    resp = submit()
    assert resp.status_code == 202
    assert resp.json == {"id": resp.json["id"], "status": "queued"}
    assert resp.headers["Location"] == f"/api/v1/audits/{resp.json['id']}"
    pairs = db_session.scalars(select(ClassPair).order_by(ClassPair.rank)).all()
    assert [(p.class_a, p.class_b) for p in pairs] == [("Archery", "Bowling"), ("Diving", "Cycling")]
    assert db_session.scalar(select(WorkItem)).payload["task"] == "workers.tasks.start_audit"
    status = client.get(resp.headers["Location"], headers=auth(token)).json
    assert status["status"] == "queued" and status["progress"] == 0 and status["n_pairs"] == 2
    assert status["options"]["top_k"] == 2 and status["error"] is None


def test_invalid_matrix_is_422_naming_the_field(submitted) -> None:
    bad = copy.deepcopy(CONFUSION)
    bad["matrix"][3] = [1, 2]
    resp = submitted[2](confusion=bad)
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "invalid_confusion_matrix"
    assert resp.json["error"]["field"].startswith("confusion.matrix[3]")


def test_unknown_option_and_bad_pair_are_422(submitted) -> None:
    resp = submitted[2](options={"top_kk": 3})
    assert resp.status_code == 422 and resp.json["error"]["field"] == "options.top_kk"
    resp = submitted[2](options={"pairs": "Archery:Nope"})
    assert resp.status_code == 422 and resp.json["error"]["field"] == "options.pairs[0]"


def test_schema_violations_use_the_error_shape(client, submitted) -> None:
    resp = client.post("/api/v1/audits", headers=auth(submitted[0]), json={"confusion": {}})
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "invalid_input" and resp.json["error"]["field"] == "model_id"


def test_audits_of_a_model_name_are_listed_across_versions(client, submitted) -> None:
    token, _, submit = submitted
    first = submit().json["id"]
    v2 = upload(client, token, bundle_bytes(version="2.0")).json
    second = client.post("/api/v1/audits", headers=auth(token),
                         json={"model_id": v2["id"], "confusion": CONFUSION}).json["id"]
    other = upload(client, token, bundle_bytes(name="other")).json
    client.post("/api/v1/audits", headers=auth(token), json={"model_id": other["id"], "confusion": CONFUSION})
    listed = client.get("/api/v1/audits?model=tiny-twostream", headers=auth(token)).json["audits"]
    assert [(a["id"], a["model"]["version"]) for a in listed] == [(second, "2.0"), (first, "1.0")]


def _finish_with_flag(db_session, audit_id: int, code: str) -> int:
    audit = db_session.get(Audit, audit_id)
    audit.status, audit.stage, audit.progress = "done", "finished", 1.0
    flag = Flag(pair_id=audit.pairs[0].id, audit_id=audit_id, code=code, stream="appearance", severity="high",
                peak_xy=[0.8, 0.2], message="look here", detail={"class_name": "Archery"})
    db_session.add(flag)
    db_session.commit()
    return flag.id


def test_pairs_report_review_and_compare(client, submitted, db_session) -> None:
    token, _, submit = submitted
    old, new = submit().json["id"], submit().json["id"]
    _finish_with_flag(db_session, old, "SHARED_EVIDENCE")
    flag_id = _finish_with_flag(db_session, new, "LOCALIZED_CUE")
    report = client.get(f"/api/v1/audits/{new}/pairs", headers=auth(token)).json
    assert report["audit"]["id"] == new and report["audit"]["streams"][0]["name"] == "appearance"
    first = report["pairs"][0]
    assert (first["a"], first["b"], first["rank"]) == ("Archery", "Bowling", 1)
    assert first["confusion"]["counts"] == [30, 20] and first["flags"][0]["code"] == "LOCALIZED_CUE"
    assert client.get(f"/api/v1/audits/{new}/pairs/2", headers=auth(token)).json["a"] == "Diving"
    assert client.get(f"/api/v1/audits/{new}/pairs/9", headers=auth(token)).status_code == 404

    shown = client.get(f"/api/v1/flags/{flag_id}", headers=auth(token)).json
    assert shown["class_name"] == "Archery" and first["flags"][0]["class_name"] == "Archery"
    # the planted benchmark's measured rate of the code rides along, from the file it wrote
    from workers.audit.flag_rates import code_rate, load_flag_rates
    assert shown["benchmark"] == first["flags"][0]["benchmark"] == code_rate("LOCALIZED_CUE", load_flag_rates())
    assert shown["benchmark"]["split"] == "heldout" and shown["benchmark"]["fired"] >= shown["benchmark"]["correct"]
    review = client.post(f"/api/v1/flags/{flag_id}/review", headers=auth(token),
                         json={"verdict": "dismissed", "note": "a real cue of the action"})
    assert review.status_code == 200 and review.json["verdict"] == "dismissed"
    assert client.post(f"/api/v1/flags/{flag_id}/review", headers=auth(token),
                       json={"verdict": "maybe"}).status_code == 422
    again = client.get(f"/api/v1/audits/{new}/pairs", headers=auth(token)).json
    assert again["pairs"][0]["flags"][0]["review"]["note"] == "a real cue of the action"

    cmp = client.get(f"/api/v1/audits/{new}/compare/{old}", headers=auth(token)).json
    assert [f["code"] for f in cmp["flags"]["new"]] == ["LOCALIZED_CUE"]
    assert [f["code"] for f in cmp["flags"]["gone"]] == ["SHARED_EVIDENCE"]
    assert len(cmp["pairs"]["persisting"]) == 2 and cmp["pairs"]["new"] == []


def test_delete_cancels_a_queued_audit_then_deletes_it(client, submitted, db_session, app) -> None:
    token, _, submit = submitted
    audit_id = submit().json["id"]
    store = app.extensions["quirkscope_artifacts"]
    store.put_bytes(f"audits/{audit_id}/clips/x.gif", b"GIF89a")
    assert client.get(f"/api/v1/audits/{audit_id}/artifacts/clips/x.gif", headers=auth(token)).data == b"GIF89a"
    assert client.get(f"/api/v1/audits/{audit_id}/artifacts/../secret", headers=auth(token)).status_code == 404
    resp = client.delete(f"/api/v1/audits/{audit_id}", headers=auth(token))
    assert resp.status_code == 202 and resp.json["status"] == "cancelled"
    assert db_session.scalar(select(WorkItem.status)) == "cancelled"
    assert client.delete(f"/api/v1/audits/{audit_id}", headers=auth(token)).status_code == 204
    assert client.get(f"/api/v1/audits/{audit_id}", headers=auth(token)).status_code == 404
    assert not store.exists(f"audits/{audit_id}/clips/x.gif")


def test_openapi_document_is_built_from_the_request_schemas(client) -> None:
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/v1/models", "/api/v1/audits", "/api/v1/audits/{audit_id}/pairs",
                 "/api/v1/audits/{audit_id}/compare/{other_id}", "/api/v1/flags/{flag_id}/review",
                 "/api/v1/health", "/api/v1/ready"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    assert {"AuditCreate", "ReviewBody"} <= set(schemas)
    assert schemas["ReviewBody"]["properties"]["verdict"]["enum"] == ["confirmed", "dismissed", "needs-data"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_health_is_public_and_ready_checks_its_dependencies(client) -> None:
    assert client.get("/api/v1/health").json == {"status": "ok"}
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200 and set(ready.json["checks"]) == {"database", "broker", "artifacts"}


def test_web_process_serves_requests_without_importing_torch(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from db.migrate import upgrade\n"
        "from service.app import create_app\n"
        "from workers.settings import load_settings\n"
        f"s = load_settings(env={{}}, home={str(tmp_path)!r}, broker_url='memory://', result_backend='cache+memory://')\n"
        "upgrade(s.database_url)\n"
        "c = create_app(settings=s).test_client()\n"
        "assert c.get('/api/v1/health').status_code == 200\n"
        "assert c.get('/api/v1/openapi.json').status_code == 200\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "False"


@pytest.fixture
def app_without_broker(tmp_path, database_url):
    """The service with a broker nobody listens on (a closed loopback port)."""
    from db.migrate import upgrade
    from service.app import create_app
    from tests.service.conftest import make_settings

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url,
                                                               broker_url="redis://127.0.0.1:1/0"))
    app.extensions["celery"].conf.broker_connection_timeout = 1
    app.extensions["celery"].conf.broker_connection_max_retries = 0
    app.extensions["celery"].conf.broker_transport_options = {"max_retries": 0}
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


def test_ready_is_503_naming_the_broker_when_it_is_unreachable(app_without_broker) -> None:
    ready = app_without_broker.test_client().get("/api/v1/ready")
    assert ready.status_code == 503
    assert ready.json["status"] == "unavailable"
    assert ready.json["checks"]["database"] == "ok" and ready.json["checks"]["artifacts"] == "ok"
    assert ready.json["checks"]["broker"].startswith("error:")


def test_submission_without_a_broker_is_503_and_the_audit_ends_failed_with_the_reason(app_without_broker) -> None:
    from service.auth import issue_token

    client = app_without_broker.test_client()
    sessions = app_without_broker.extensions["quirkscope_db"].sessionmaker
    with app_without_broker.app_context():
        token = issue_token(sessions(), "alpha", "submit,read")
    model = upload(client, token, bundle_bytes()).json
    resp = client.post("/api/v1/audits", headers=auth(token),
                       json={"model_id": model["id"], "confusion": CONFUSION, "options": {"top_k": 2}})
    assert resp.status_code == 503
    assert "broker" in resp.json["error"]["message"]
    with sessions() as session:
        [audit] = session.scalars(select(Audit)).all()
        assert (audit.status, audit.error_code) == ("failed", "broker_unavailable")
        assert "could not reach the task broker" in audit.error


def test_models_can_be_looked_up_by_sha256(client, submitted) -> None:
    token, model, _ = submitted
    found = client.get(f"/api/v1/models?sha256={model['sha256']}", headers=auth(token)).json["models"]
    assert [m["id"] for m in found] == [model["id"]]
    assert client.get("/api/v1/models?sha256=" + "0" * 64, headers=auth(token)).json["models"] == []


def test_compare_with_baseline_carries_decisions_along_the_chain_of_releases(client, submitted, db_session) -> None:
    """v1 dismisses a finding; v2 (baseline v1) raises it again and inherits the dismissal without a review of its
    own; v3 (baseline ``latest`` = v2) still sees it dismissed. A new finding on v3 is new."""
    token, v1_model, submit = submitted
    v1 = submit().json["id"]
    flag_v1 = _finish_with_flag(db_session, v1, "LOCALIZED_CUE")
    client.post(f"/api/v1/flags/{flag_v1}/review", headers=auth(token), json={"verdict": "dismissed", "note": "ok"})

    def release(version: str, baseline) -> int:
        model = upload(client, token, bundle_bytes(version=version)).json
        resp = client.post("/api/v1/audits", headers=auth(token),
                           json={"model_id": model["id"], "confusion": CONFUSION, "options": {"top_k": 2},
                                 "baseline": baseline})
        assert resp.status_code == 202, resp.json
        return resp.json["id"]

    v2 = release("2.0", str(v1))
    _finish_with_flag(db_session, v2, "LOCALIZED_CUE")
    v3 = release("3.0", "latest")
    assert db_session.get(Audit, v3).baseline_id == v2
    _finish_with_flag(db_session, v3, "LOCALIZED_CUE")
    _finish_with_flag(db_session, v3, "CONTEXT_CUE")

    cmp = client.get(f"/api/v1/audits/{v3}/compare", headers=auth(token)).json  # its own baseline: v2
    assert cmp["baseline"]["id"] == v2 and cmp["candidate"]["model"]["version"] == "3.0"
    persisting = cmp["findings"]["persisting"]
    assert [f["code"] for f in persisting] == ["LOCALIZED_CUE"]
    assert persisting[0]["decision"]["verdict"] == "dismissed" and persisting[0]["decision"]["source"] == "baseline"
    assert [f["code"] for f in cmp["findings"]["new"]] == ["CONTEXT_CUE"]
    same = client.get(f"/api/v1/audits/{v3}/compare?baseline=tiny-twostream@1.0", headers=auth(token)).json
    assert same["baseline"]["id"] == v1 and same["findings"]["persisting"][0]["fingerprint"] == persisting[0][
        "fingerprint"]
    flag = client.get(f"/api/v1/flags/{persisting[0]['flag_id']}", headers=auth(token)).json
    assert flag["fingerprint"] == persisting[0]["fingerprint"]
    report = client.get(f"/api/v1/audits/{v3}/pairs", headers=auth(token)).json
    assert report["pairs"][0]["flags"][0]["fingerprint"] == persisting[0]["fingerprint"]


def test_baseline_of_another_model_or_unknown_is_refused_naming_the_field(client, submitted, db_session) -> None:
    token, _, submit = submitted
    other = upload(client, token, bundle_bytes(name="other")).json
    theirs = client.post("/api/v1/audits", headers=auth(token),
                         json={"model_id": other["id"], "confusion": CONFUSION}).json["id"]
    _finish_with_flag(db_session, theirs, "LOCALIZED_CUE")
    resp = submit(baseline=theirs)
    assert resp.status_code == 422 and resp.json["error"]["field"] == "baseline"
    assert "of model 'other'" in resp.json["error"]["message"]
    assert submit(baseline="tiny-twostream@9.9").status_code == 404
    assert submit(baseline="yesterday").status_code == 422
    mine = submit().json["id"]
    assert submit(baseline=mine).json["error"]["message"].endswith("is queued, not done")
    assert submit(baseline="latest").status_code == 202  # a first release: no baseline
    resp = client.get(f"/api/v1/audits/{mine}/compare?baseline={theirs}", headers=auth(token))
    assert resp.status_code == 422 and resp.json["error"]["field"] == "baseline"
