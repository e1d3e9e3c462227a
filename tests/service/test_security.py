"""Security properties, checked over the whole URL map rather than route by route: every route's scope is
declared and enforced; no route gives one project's objects to another project's token (read or write,
API or pages); tokens are stored only as hashes and compared in constant time; the session cookie is
Secure, HttpOnly and SameSite and the review form needs the session's CSRF token; artifact keys are never
built from what a user sends."""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import MetaData, func, select

from db.models import ApiToken, Audit, ClassPair, Flag, Project, Review
from service.api import ENDPOINT_SCOPES
from tests import hostile
from tests.service.conftest import CONFUSION, auth, make_settings, upload

# The scope each route needs: the specification this test holds the code to. A new route fails the test
# until it is added here (and declared with @requires).
EXPECTED_SCOPES: dict[str, str | None] = {
    "api.health": None, "api.ready": None,
    "api.upload_model": "submit", "api.list_models": "read", "api.get_model_route": "read",
    "api.create_audit": "submit", "api.list_audits": "read", "api.get_audit_status": "read",
    "api.get_pairs": "read", "api.get_pair": "read", "api.get_artifact": "read", "api.compare": "read",
    "api.compare_with_baseline": "read",
    "api.get_report_html": "read", "api.delete_audit": "submit",
    "api.get_flag_route": "read", "api.review_flag": "review",
}
PUBLIC_NON_API = {"static", "openapi.static", "openapi.doc_url", "openapi.openapi", "report.index", "report.login",
                  "report.logout"}
# Routes outside the API that want a bearer token with a scope (no session cookie). /metrics also takes the
# static QUIRKSCOPE_METRICS_TOKEN, and QUIRKSCOPE_METRICS_PUBLIC=1 opens it (scrapes on a private network).
BEARER_ROUTES = {"metrics.metrics": "metrics"}
SESSION_PAGES = {"report.audit_list": "read", "report.audit_page": "read", "report.review_flag": "review"}
ALL_SCOPES = ("submit", "read", "review", "metrics")


def api_rules(app) -> list[Any]:  # type: ignore[no-untyped-def]
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith("api.")]


def fill(rule, ids: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ids[m.group(1)]), rule.rule)


def methods(rule) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(rule.methods - {"HEAD", "OPTIONS"})


# ------------------------------------------------------------------------------------------------- scopes

def test_every_route_is_in_the_scope_table_and_declares_its_scope(app) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    unknown = endpoints - set(EXPECTED_SCOPES) - PUBLIC_NON_API - set(SESSION_PAGES) - set(BEARER_ROUTES)
    assert not unknown, f"routes without a declared expectation: {sorted(unknown)}"
    from service.metrics import METRICS_SCOPE

    assert BEARER_ROUTES["metrics.metrics"] == METRICS_SCOPE
    for endpoint, scope in EXPECTED_SCOPES.items():
        name = endpoint.rpartition(".")[2]
        assert name in ENDPOINT_SCOPES, f"{endpoint} does not declare its scope with @requires"
        assert ENDPOINT_SCOPES[name] == scope, endpoint


def test_every_api_route_enforces_its_scope(app, client, make_token) -> None:
    """No token: 401 (public routes answer); every scope but the needed one: 403; only the needed one: neither
    (ids that do not exist, so that nothing is changed)."""
    tokens = {s: make_token("alpha", s) for s in ALL_SCOPES}
    all_but = {s: make_token("alpha", ",".join(x for x in ALL_SCOPES if x != s)) for s in ALL_SCOPES}
    ids = {"model_id": 999, "audit_id": 999, "flag_id": 999, "other_id": 998, "rank": 1, "key": "report.json"}
    checked = 0
    for rule in api_rules(app):
        scope = EXPECTED_SCOPES[rule.endpoint]
        for method in methods(rule):
            url = fill(rule, ids)
            anonymous = client.open(url, method=method)
            if scope is None:
                assert anonymous.status_code not in (401, 403), (method, url)
                continue
            assert anonymous.status_code == 401, (method, url, anonymous.status_code)
            assert client.open(url, method=method, headers=auth(all_but[scope])).status_code == 403, (method, url)
            allowed = client.open(url, method=method, headers=auth(tokens[scope]), json={})
            assert allowed.status_code not in (401, 403, 500), (method, url, allowed.status_code)
            checked += 1
    assert checked == len([e for e, s in EXPECTED_SCOPES.items() if s])


def test_every_bearer_route_outside_the_api_enforces_its_scope(app, client, make_token) -> None:
    """As for the API: no token 401, every scope but the needed one 403, only the needed one 200; and a
    login session with every scope is not a bearer token."""
    for endpoint, scope in BEARER_ROUTES.items():
        rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
        for method in methods(rule):
            assert client.open(rule.rule, method=method).status_code == 401, (method, rule.rule)
            all_but = make_token("alpha", ",".join(s for s in ALL_SCOPES if s != scope))
            assert client.open(rule.rule, method=method, headers=auth(all_but)).status_code == 403, rule.rule
            only = make_token("alpha", scope)
            assert client.open(rule.rule, method=method, headers=auth(only)).status_code == 200, rule.rule
            browser = app.test_client()
            browser.post("/login", data={"token": make_token("alpha", ",".join(ALL_SCOPES))})
            assert browser.open(rule.rule, method=method).status_code == 401, rule.rule


def test_pages_need_a_login_and_the_review_form_needs_the_review_scope(app, client, make_token, db_session) -> None:
    audit_id, flag_id, _ = seed_project(app, db_session, make_token("alpha"), "alpha")
    for url in ("/audits", f"/audits/{audit_id}"):
        resp = client.get(url)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], url
    resp = client.post(f"/flags/{flag_id}/review", data={"verdict": "confirmed"})
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    reader = make_token("alpha", "read")
    client.post("/login", data={"token": reader})
    assert client.post(f"/flags/{flag_id}/review", data={"verdict": "confirmed"}).status_code == 403
    assert db_session.scalar(select(func.count()).select_from(Review)) == 0


def test_metrics_with_its_token_set_refuses_anonymous_and_tokens_without_the_metrics_scope(
        tmp_path: Path, database_url: str) -> None:
    from db.migrate import upgrade
    from service.app import create_app
    from service.auth import issue_token

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, metrics_token="m-secret"))
    try:
        with app.app_context():
            project_token = issue_token(app.extensions["quirkscope_db"].sessionmaker(), "alpha", "submit,read,review")
        client = app.test_client()
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth(project_token)).status_code == 403
        assert client.get("/metrics", headers=auth("m-secret")).status_code == 200
    finally:
        app.extensions["quirkscope_db"].engine.dispose()


# ----------------------------------------------------------------------------------------- two projects

def seed_project(app, db_session, token: str, project: str, version: str = "1") -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """A project's model (uploaded), a finished audit with a pair, a flag and an artifact file."""
    client = app.test_client()
    up = upload(client, token, hostile.bundle(name=f"model-of-{project}", version=version))
    assert up.status_code == 201, up.json
    model_id = up.json["id"]
    proj = db_session.scalar(select(Project).where(Project.name == project))
    audit = Audit(project_id=proj.id, model_id=model_id, options={"top_k": 1}, confusion=CONFUSION, status="done",
                  stage="finished", progress=1.0)
    audit.pairs = [ClassPair(rank=1, class_a="Archery", class_b="Bowling",
                             confusion={"a_as_b": .3, "b_as_a": .2, "counts": [30, 20]})]
    db_session.add(audit)
    db_session.flush()
    flag = Flag(pair_id=audit.pairs[0].id, audit_id=audit.id, code="LOCALIZED_CUE", stream="appearance",
                severity="high", peak_xy=[0.5, 0.5], message="look")
    db_session.add(flag)
    db_session.commit()
    app.extensions["quirkscope_artifacts"].put_bytes(f"audits/{audit.id}/report.json", b'{"secret": 1}')
    return audit.id, flag.id, model_id


def everything(app) -> tuple[dict[str, list], list[str]]:  # type: ignore[no-untyped-def]
    engine = app.extensions["quirkscope_db"].engine
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        rows = {t.name: sorted((tuple(r) for r in conn.execute(t.select())), key=repr) for t in meta.sorted_tables}
    return rows, sorted(app.extensions["quirkscope_artifacts"].keys(""))


def test_another_projects_token_gets_404_on_every_read_and_write(app, client, make_token, db_session) -> None:
    alpha, beta = make_token("alpha"), make_token("beta")
    a_audit, a_flag, a_model = seed_project(app, db_session, alpha, "alpha")
    b_audit, _, b_model = seed_project(app, db_session, beta, "beta")
    before = everything(app)
    tried = []
    for rule in api_rules(app):
        if EXPECTED_SCOPES[rule.endpoint] is None or not rule.arguments - {"key", "rank"}:
            continue
        variants = [{"model_id": a_model, "audit_id": a_audit, "flag_id": a_flag, "other_id": a_audit, "rank": 1,
                     "key": "report.json"}]
        if "other_id" in rule.arguments:  # beta's own audit compared with alpha's
            variants.append(variants[0] | {"audit_id": b_audit})
        for ids in variants:
            for method in methods(rule):
                url = fill(rule, ids)
                body = {"verdict": "confirmed", "note": "from beta"} if method == "POST" else None
                resp = client.open(url, method=method, headers=auth(beta), json=body)
                assert resp.status_code == 404, (method, url, resp.status_code, resp.get_data(as_text=True)[:200])
                assert resp.json["error"]["code"] == "not_found"
                tried.append(f"{method} {rule.rule}")
    # beta's own audit compared with alpha's, named in the query
    resp = client.get(f"/api/v1/audits/{b_audit}/compare?baseline={a_audit}", headers=auth(beta))
    assert resp.status_code == 404 and resp.json["error"]["field"] == "baseline", resp.json
    tried.append("GET /api/v1/audits/<audit_id>/compare?baseline=")
    # writes that name alpha's objects in the body
    for body in ({"model_id": a_model, "confusion": CONFUSION},
                 {"model_id": b_model, "confusion": CONFUSION, "baseline": a_audit}):
        resp = client.post("/api/v1/audits", headers=auth(beta), json=body)
        assert resp.status_code == 404, resp.json
        tried.append("POST /api/v1/audits " + ",".join(body))
    # lists show only beta's own
    assert [m["id"] for m in client.get("/api/v1/models", headers=auth(beta)).json["models"]] == [b_model]
    assert [a["id"] for a in client.get("/api/v1/audits", headers=auth(beta)).json["audits"]] == [b_audit]
    # the pages, logged in as beta
    pages = app.test_client()
    pages.post("/login", data={"token": beta})
    assert pages.get(f"/audits/{a_audit}").status_code == 404
    assert f"/audits/{a_audit}\"".encode() not in pages.get("/audits").data
    page = pages.get(f"/audits/{b_audit}").data.decode()
    csrf = form_token(page)
    assert pages.post(f"/flags/{a_flag}/review", data={"csrf": csrf, "verdict": "dismissed"}).status_code == 404
    assert everything(app) == before
    assert len(tried) >= 12, tried


def test_the_same_bytes_uploaded_by_two_projects_are_two_models(app, client, make_token) -> None:
    alpha, beta = make_token("alpha"), make_token("beta")
    data = hostile.bundle()
    first, second = upload(client, alpha, data), upload(client, beta, data)
    assert first.status_code == second.status_code == 201
    assert first.json["id"] != second.json["id"]
    assert client.get(f"/api/v1/models/{first.json['id']}", headers=auth(beta)).status_code == 404


# ---------------------------------------------------------------------------------------------- tokens

def test_tokens_are_stored_only_as_hashes_nowhere_in_plain(app, make_token) -> None:
    tokens = [make_token("alpha"), make_token("beta", "read")]
    rows, _ = everything(app)
    dump = json.dumps(rows, default=str)
    for token in tokens:
        assert token not in dump and token[3:] not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        stored = s.scalars(select(ApiToken)).all()
    assert all(len(t.token_hash) == 64 and len(t.prefix) <= 10 for t in stored)


def test_token_hashes_are_compared_in_constant_time(app, client, make_token, monkeypatch) -> None:
    import hmac

    import service.auth

    token = make_token("alpha")
    calls: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(service.auth, "compare_digest", spy)
    assert client.get("/api/v1/models", headers=auth(token)).status_code == 200
    assert calls and calls[-1][0] == calls[-1][1] == hashlib.sha256(token.encode()).hexdigest()
    near = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get("/api/v1/models", headers=auth(near)).status_code == 401


def test_a_revoked_token_is_refused(app, client, make_token) -> None:
    import datetime as dt

    token = make_token("alpha")
    with app.extensions["quirkscope_db"].sessionmaker() as s:
        row = s.scalar(select(ApiToken))
        row.revoked_at = dt.datetime.now(dt.timezone.utc)
        s.commit()
    assert client.get("/api/v1/models", headers=auth(token)).status_code == 401


# ---------------------------------------------------------------------------------------- cookies, CSRF

@pytest.fixture
def secure_app(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    from db.migrate import upgrade
    from service.app import create_app

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, cookie_secure=True))
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


def test_session_cookie_is_secure_http_only_same_site_and_holds_no_token(secure_app) -> None:
    from service.auth import issue_token

    with secure_app.app_context():
        token = issue_token(secure_app.extensions["quirkscope_db"].sessionmaker(), "alpha", "read,review")
    resp = secure_app.test_client().post("/login", data={"token": token})
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite"} <= attributes, cookie
    assert "SameSite=Lax" in cookie
    assert token not in cookie and token[3:] not in cookie


def form_token(page: str) -> str:
    """The CSRF token of a page's review forms (a hidden field of each form)."""
    return re.search(r'<input type="hidden" name="csrf" value="([\w-]+)">', page).group(1)


def test_review_form_refuses_missing_wrong_and_foreign_csrf_tokens(app, make_token, db_session) -> None:
    token = make_token("alpha")
    audit_id, flag_id, _ = seed_project(app, db_session, token, "alpha")
    mine, other = app.test_client(), app.test_client()
    for c in (mine, other):
        c.post("/login", data={"token": token})
    page = mine.get(f"/audits/{audit_id}").data.decode()
    csrf = form_token(page)
    foreign = form_token(other.get(f"/audits/{audit_id}").data.decode())
    assert foreign != csrf
    for sent in ({}, {"csrf": ""}, {"csrf": f"{csrf[:-2]}xx"}, {"csrf": foreign}):
        resp = mine.post(f"/flags/{flag_id}/review", data={"verdict": "confirmed", **sent})
        assert resp.status_code == 400 and b"form token" in resp.data, sent
    assert db_session.scalar(select(func.count()).select_from(Review)) == 0
    db_session.commit()  # end the read snapshot (SQLite)
    assert mine.post(f"/flags/{flag_id}/review", data={"verdict": "confirmed", "csrf": csrf}).status_code == 302
    assert db_session.scalar(select(func.count()).select_from(Review)) == 1


def test_review_form_token_is_never_in_a_url(app, make_token, db_session) -> None:
    token = make_token("alpha")
    audit_id, flag_id, _ = seed_project(app, db_session, token, "alpha")
    client = app.test_client()
    client.post("/login", data={"token": token})
    page = client.get(f"/audits/{audit_id}").data.decode()
    csrf = form_token(page)
    urls = re.findall(r'(?:action|href|src)="([^"]*)"', page)
    assert urls and not [u for u in urls if csrf in u or "csrf" in u]
    # a token in the query string (as a leaked URL would carry) is not accepted in place of the form field
    resp = client.post(f"/flags/{flag_id}/review?csrf={csrf}", data={"verdict": "confirmed"})
    assert resp.status_code == 400
    assert db_session.scalar(select(func.count()).select_from(Review)) == 0


# ----------------------------------------------------------------------------------------- artifact paths

def test_an_upload_is_stored_under_its_hash_whatever_its_file_and_model_names(app, client, make_token) -> None:
    token = make_token("alpha")
    data = hostile.bundle(name="../../../../etc/cron.d/x", version="../..")
    resp = client.post("/api/v1/models", headers=auth(token), content_type="multipart/form-data",
                       data={"bundle": (io.BytesIO(data), "../../../../tmp/evil.zip")})
    assert resp.status_code == 201, resp.json
    assert list(app.extensions["quirkscope_artifacts"].keys("")) == [f"models/{hashlib.sha256(data).hexdigest()}.zip"]


def test_artifact_route_cannot_reach_outside_its_audit(app, client, make_token, db_session) -> None:
    token = make_token("alpha")
    a_audit, _, _ = seed_project(app, db_session, token, "alpha")
    b_audit, _, _ = seed_project(app, db_session, token, "alpha", version="2")
    store = app.extensions["quirkscope_artifacts"]
    sha = next(k for k in store.keys("models/")).removeprefix("models/")
    assert client.get(f"/api/v1/audits/{a_audit}/artifacts/report.json", headers=auth(token)).status_code == 200
    for key in (f"../{b_audit}/report.json", f"..%2F{b_audit}%2Freport.json", f"../../{sha}", "./report.json",
                f"%2E%2E/{b_audit}/report.json", "report.json%00.png", "..\\report.json"):
        resp = client.get(f"/api/v1/audits/{a_audit}/artifacts/{key}", headers=auth(token))
        assert resp.status_code == 404, (key, resp.status_code)


@pytest.mark.parametrize("name", ["../../../tmp/escape", "a/b", "..", "tab\there", "back\\slash"])
def test_class_names_that_would_be_paths_are_refused_at_upload(client, make_token, name: str) -> None:
    resp = upload(client, make_token("alpha"), hostile.bundle(classes=["Archery", name]))
    assert resp.status_code == 422
    assert resp.json["error"]["field"].startswith("manifest") and "name" in resp.json["error"]["message"]


def test_rendered_artifacts_stay_inside_their_folder_for_unusual_legal_names(tmp_path: Path) -> None:
    from workers.audit.pipeline import ObjectiveKey, Visualization, render_class_artifacts
    from workers.engine.manifest import parse_manifest

    names = ["passing American football (in game)", "Ünïcødé 跳舞", "it's \"quoted\"", "...dots", "x" * 200]
    manifest = parse_manifest(hostile.manifest(classes=names))
    rng = np.random.default_rng(0)
    vis = [Visualization(key=ObjectiveKey(c, 0, 0), kappa=0.0, logit=1.0, probability=0.5, config={},
                         tensors={s: rng.normal(size=hostile.SHAPES[s]).astype(np.float32) for s in hostile.SHAPES})
           for c in names]
    out = tmp_path / "out"
    render_class_artifacts(manifest, vis, out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert len(written) == len(names) * 2 * 4
