"""The report page of one audit, rendered from its database rows with the static report's template: live
(progress, auto-refresh) while the audit runs. Shared by the API's ``/report`` and the reviewers' pages."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from flask import Response, url_for

from db.models import FINISHED_STATUSES, Audit
from workers.audit.report_html import render_report_html
from workers.audit.report_rows import build_report

LIVE_REFRESH_S = 5


def render_audit_page(audit: Audit, *,
                      review_url_for: Callable[[Mapping[str, Any]], str | None] | None = None,
                      review_form_fields: Mapping[str, str] | None = None) -> Response:
    """The report page of ``audit``; ``review_url_for(flag)`` gives each flag's review form target (none:
    no review forms), ``review_form_fields`` the hidden fields those forms post (the CSRF token)."""
    report = build_report(audit)
    live = None
    if audit.status != "done":
        running = audit.status not in FINISHED_STATUSES
        live = {"progress": audit.progress or 0.0, "status": audit.status, "message": audit.error or "",
                "refresh_s": LIVE_REFRESH_S if running else None}

    def asset_url(rel: str) -> str:
        return url_for("api.get_artifact", audit_id=audit.id, key=rel)

    html = render_report_html(report, live=live, review_url_for=review_url_for,
                              review_form_fields=review_form_fields, asset_url=asset_url)
    return Response(html, mimetype="text/html")
