"""The HTML pages: login with a token into an HTTP-only session cookie, the audit list, the audit page
with review forms that need the session's form token."""
from __future__ import annotations

import re

from sqlalchemy import select

from db.models import Audit, ClassPair, Flag, ModelBundle, Project


def _finished_audit(db_session, project: str = "alpha") -> tuple[int, int]:
    proj = db_session.scalar(select(Project).where(Project.name == project))
    model = ModelBundle(project_id=proj.id, sha256="1" * 64, name="m", version="2", format="onnx",
                        classes=["a", "b"], manifest={"inputs": [{"name": "appearance", "modality": "rgb"}]},
                        size_bytes=1, artifact_key="models/x.zip")
    db_session.add(model)
    db_session.flush()
    audit = Audit(project_id=proj.id, model_id=model.id, options={"top_k": 1},
                  confusion={"classes": ["a", "b"], "matrix": [[5, 5], [1, 9]]}, status="done", stage="finished",
                  progress=1.0)
    audit.pairs = [ClassPair(rank=1, class_a="a", class_b="b",
                             confusion={"a_as_b": .5, "b_as_a": .1, "counts": [5, 1]})]
    db_session.add(audit)
    db_session.flush()
    flag = Flag(pair_id=audit.pairs[0].id, audit_id=audit.id, code="LOCALIZED_CUE", stream="appearance",
                severity="high", peak_xy=[0.9, 0.1], message="Look at the top-right corner.")
    db_session.add(flag)
    db_session.commit()
    return audit.id, flag.id


def test_pages_redirect_to_login_and_a_wrong_token_is_refused(client) -> None:
    resp = client.get("/audits")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    page = client.get("/login")
    assert b'<input type="password" name="token"' in page.data
    assert client.post("/login", data={"token": "qs_wrong"}).status_code == 401


def test_login_keeps_only_a_signed_http_only_cookie_without_the_token(client, make_token) -> None:
    token = make_token()
    resp = client.post("/login?next=/audits", data={"token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/audits"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and token not in cookie and "SameSite=Lax" in cookie


def test_review_form_records_a_review_visible_in_the_api(client, make_token, db_session) -> None:
    token = make_token()
    audit_id, flag_id = _finished_audit(db_session)
    client.post("/login", data={"token": token})
    listing = client.get("/audits")
    assert f"/audits/{audit_id}".encode() in listing.data
    page = client.get(f"/audits/{audit_id}").data.decode()
    assert "Look at the top-right corner." in page
    action = re.search(r'<form class="review-form" method="post" action="([^"]+)"', page).group(1)
    assert action == f"/flags/{flag_id}/review"  # the form token travels in the body, never in a URL
    csrf = re.search(r'<input type="hidden" name="csrf" value="([\w-]+)">', page).group(1)
    assert csrf not in action
    missing = client.post(action, data={"verdict": "confirmed"})
    assert missing.status_code == 400 and b"form token" in missing.data
    resp = client.post(action, data={"csrf": csrf, "verdict": "needs-data", "note": "more clips"})
    assert resp.status_code == 302 and csrf not in resp.headers["Location"]
    shown = client.get(f"/api/v1/flags/{flag_id}", headers={"Authorization": f"Bearer {token}"}).json
    assert shown["review"]["verdict"] == "needs-data" and shown["review"]["note"] == "more clips"
    assert shown["review"]["by"] == token[:10]


def test_a_reader_sees_the_audit_page_without_review_forms(client, make_token, db_session) -> None:
    make_token("alpha")
    reader = make_token("alpha", "read")
    audit_id, _ = _finished_audit(db_session)
    client.post("/login", data={"token": reader})
    page = client.get(f"/audits/{audit_id}").data.decode()
    assert "Look at the top-right corner." in page and '<form class="review-form"' not in page
