"""Token auth: 401 without a token, 403 without the scope, 404 for another project's data, hashes only."""
from __future__ import annotations

from sqlalchemy import select

from db.models import ApiToken, Audit, ClassPair, Flag, ModelBundle, Project
from tests.service.conftest import auth, bundle_bytes, upload


def _audit_of(db_session, project: str) -> tuple[int, int]:
    proj = db_session.scalar(select(Project).where(Project.name == project))
    model = ModelBundle(project_id=proj.id, sha256="0" * 64, name="m", version="1", format="onnx", classes=["a", "b"],
                        manifest={}, size_bytes=1, artifact_key="models/x.zip")
    db_session.add(model)
    db_session.flush()
    audit = Audit(project_id=proj.id, model_id=model.id, options={}, confusion={}, status="done", stage="finished")
    audit.pairs = [ClassPair(rank=1, class_a="a", class_b="b", confusion={})]
    db_session.add(audit)
    db_session.flush()
    flag = Flag(pair_id=audit.pairs[0].id, audit_id=audit.id, code="SHARED_EVIDENCE", stream="appearance")
    db_session.add(flag)
    db_session.commit()
    return audit.id, flag.id


def test_request_without_token_is_401_with_json_error(client) -> None:
    resp = client.get("/api/v1/audits")
    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_token_is_401(client, make_token) -> None:
    make_token()
    assert client.get("/api/v1/audits", headers=auth("qs_not-a-real-token")).status_code == 401


def test_token_without_scope_is_403(client, make_token) -> None:
    reader = make_token(scopes="read")
    resp = upload(client, reader, bundle_bytes())
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "forbidden"
    assert client.post("/api/v1/flags/1/review", headers=auth(reader),
                       json={"verdict": "confirmed"}).status_code == 403


def test_other_projects_audit_and_flag_are_404(client, make_token, db_session) -> None:
    make_token("alpha")
    beta = make_token("beta")
    audit_id, flag_id = _audit_of(db_session, "alpha")
    for url in (f"/api/v1/audits/{audit_id}", f"/api/v1/audits/{audit_id}/pairs", f"/api/v1/flags/{flag_id}",
                f"/api/v1/audits/{audit_id}/compare/{audit_id}"):
        assert client.get(url, headers=auth(beta)).status_code == 404, url
    assert client.post(f"/api/v1/flags/{flag_id}/review", headers=auth(beta),
                       json={"verdict": "dismissed"}).status_code == 404
    assert client.delete(f"/api/v1/audits/{audit_id}", headers=auth(beta)).status_code == 404
    assert client.get("/api/v1/audits", headers=auth(beta)).json["audits"] == []


def test_tokens_are_stored_only_as_sha256_hashes(make_token, db_session) -> None:
    import hashlib

    token = make_token()
    row = db_session.scalar(select(ApiToken))
    assert token not in (row.token_hash, row.prefix, row.scopes)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert len(token) >= 40


def test_upload_without_token_is_refused_before_the_body_is_read(client) -> None:
    resp = client.post("/api/v1/models", data={"bundle": (__import__("io").BytesIO(b"x" * 1000), "b.zip")},
                       content_type="multipart/form-data")
    assert resp.status_code == 401


def test_session_cookie_does_not_authorise_api_writes(client, make_token) -> None:
    token = make_token()
    assert client.post("/login", data={"token": token}).status_code == 302
    assert client.get("/api/v1/audits").status_code == 200  # GET with the login cookie
    assert upload(client, "", bundle_bytes()).status_code == 401  # an empty bearer is no bearer
    resp = client.post("/api/v1/models", data={"bundle": (__import__("io").BytesIO(bundle_bytes()), "b.zip")},
                       content_type="multipart/form-data")
    assert resp.status_code == 401
