"""The HTML blueprint ``report``: a login that takes an API token (kept as its hash in the signed, HTTP-only
session cookie), the audit list, the live audit page (the local report's page, rendered by
``workers.audit.report_html``, with progress while running) and the review form posted from each flag."""
from __future__ import annotations

import secrets
from typing import Any, Mapping

from flask import Blueprint, Response, abort, redirect, render_template_string, request, session, url_for
from markupsafe import Markup
from sqlalchemy import select

from db.models import Audit, ModelBundle
from service.auth import SESSION_KEY, Principal, current_principal, hash_token, principal_for_hash
from service.errors_http import NotAuthenticated, NotFound, PermissionDenied
from service.extensions import db
from service.report_page import render_audit_page
from workers.engine.errors import QuirkScopeError

pages_blueprint = Blueprint("report", __name__)
CSRF_KEY = "csrf"

_LAYOUT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }} · QuirkScope</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
.error{color:#a00}form.inline{display:inline}</style></head><body>
<header><strong>QuirkScope</strong>{% if principal %} · project {{ principal.project_name }}
<form class="inline" method="post" action="{{ url_for('report.logout') }}"><button>Log out</button></form>{% endif %}
</header><main>{{ body }}</main></body></html>"""

_LOGIN = """<h1>Log in</h1>{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('report.login', next=next) }}">
<label>API token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Log in</button></form>
<p>Create a token with <code>quirkscope token create --project NAME --scopes read,review</code>.</p>"""

_AUDITS = """<h1>Audits</h1><table><thead><tr><th>Audit</th><th>Model</th><th>Version</th><th>Status</th>
<th>Progress</th><th>Created</th></tr></thead><tbody>
{% for a in audits %}<tr><td><a href="{{ url_for('report.audit_page', audit_id=a.id) }}">#{{ a.id }}</a></td>
<td>{{ a.model.name }}</td><td>{{ a.model.version }}</td><td class="status">{{ a.status }}</td>
<td>{{ '%.0f' % (100 * a.progress) }}%</td><td>{{ a.created_at.strftime('%Y-%m-%d %H:%M') }}</td></tr>
{% else %}<tr><td colspan="6">No audits yet.</td></tr>{% endfor %}</tbody></table>"""


def _page(title: str, body_template: str, principal: Principal | None = None, status: int = 200,
          **context: Any) -> Response:
    body = Markup(render_template_string(body_template, **context))  # already escaped by Jinja
    html = render_template_string(_LAYOUT, title=title, body=body, principal=principal)
    return Response(html, status=status, mimetype="text/html")


def _viewer(scope: str = "read") -> Principal:
    """The logged-in principal (session cookie; a bearer token works too)."""
    return current_principal(scope, allow_session=True)


def _csrf_token() -> str:
    token = session.get(CSRF_KEY)
    if not token:
        token = session[CSRF_KEY] = secrets.token_urlsafe(24)
    return token


@pages_blueprint.errorhandler(NotAuthenticated)
def _login_first(_exc: NotAuthenticated) -> Response:
    return redirect(url_for("report.login", next=request.full_path.rstrip("?")))  # type: ignore[return-value]


@pages_blueprint.errorhandler(PermissionDenied)
def _forbidden(exc: PermissionDenied) -> Response:
    return _page("Forbidden", "<h1>Forbidden</h1><p>{{ m }}</p>", status=403, m=exc.message)


@pages_blueprint.errorhandler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return _page("Not found", "<h1>Not found</h1><p>{{ m }}</p>", status=404, m=exc.message)


@pages_blueprint.get("/")
def index() -> Response:
    return redirect(url_for("report.audit_list"))  # type: ignore[return-value]


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("report.audit_list")


@pages_blueprint.route("/login", methods=["GET", "POST"])
def login() -> Response:
    nxt = request.args.get("next")
    if request.method == "GET":
        return _page("Log in", _LOGIN, next=nxt, error=None)
    token = (request.form.get("token") or "").strip()
    principal = principal_for_hash(db.session, hash_token(token)) if token else None
    if principal is None:
        return _page("Log in", _LOGIN, status=401, next=nxt, error="Unknown or revoked token.")
    session.clear()
    session[SESSION_KEY] = hash_token(token)
    session[CSRF_KEY] = secrets.token_urlsafe(24)
    session.permanent = False
    return redirect(_safe_next(nxt))  # type: ignore[return-value]


@pages_blueprint.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("report.login"))  # type: ignore[return-value]


@pages_blueprint.get("/audits")
def audit_list() -> Response:
    principal = _viewer()
    audits = db.session.scalars(select(Audit).join(ModelBundle, Audit.model_id == ModelBundle.id)
                                .where(Audit.project_id == principal.project_id)
                                .order_by(Audit.id.desc()).limit(200)).all()
    return _page("Audits", _AUDITS, principal, audits=audits)


@pages_blueprint.get("/audits/<int:audit_id>")
def audit_page(audit_id: int) -> Response:
    from service.api.audits import get_audit
    from service.api.report_reads import REPORT_ROWS

    principal = _viewer()
    audit = get_audit(principal.project_id, audit_id, load=REPORT_ROWS)
    if "review" not in principal.scopes:
        return render_audit_page(audit)

    def review_url_for(flag: Mapping[str, Any]) -> str | None:
        return url_for("report.review_flag", flag_id=flag["id"]) if flag.get("id") else None

    # the form token goes in the POST body: a URL carrying it would leak it to logs and Referer headers
    return render_audit_page(audit, review_url_for=review_url_for, review_form_fields={CSRF_KEY: _csrf_token()})


@pages_blueprint.post("/flags/<int:flag_id>/review")
def review_flag(flag_id: int) -> Response:
    """The review form's target: checks the session's CSRF token (a field of the form body, never the
    query string), records the review, goes back."""
    from service.api.flags import get_flag, record_review

    principal = _viewer("review")
    sent = request.form.get(CSRF_KEY)
    if not sent or not session.get(CSRF_KEY) or not secrets.compare_digest(sent, session[CSRF_KEY]):
        abort(400, "missing or stale form token; reload the page")
    flag = get_flag(principal.project_id, flag_id)
    verdict = request.form.get("verdict", "")
    if verdict not in ("confirmed", "dismissed", "needs-data"):
        abort(400, "choose a verdict")
    try:
        record_review(principal, flag, verdict, (request.form.get("note") or "")[:10_000])
    except QuirkScopeError as exc:
        abort(400, exc.message)
    return redirect(url_for("report.audit_page", audit_id=flag.audit_id) + f"#pair-{flag.pair.rank}")  # type: ignore[return-value]
