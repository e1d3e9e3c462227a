"""Conditional GETs of the JSON API: a successful JSON answer carries a strong ``ETag`` (a hash of the body just
built, so it can never name stale data) and ``Cache-Control: private, no-cache`` (a client may keep it, must
revalidate it, and no shared cache may store one project's data); a request whose ``If-None-Match`` matches gets
304 without the body. A response that already carries an ETag keeps it (``report_reads.report_response`` serves a
finished audit's kept body with the ETag computed when it was kept); the others are built and hashed on every
request: for them this saves the transfer, not the server's work."""
from __future__ import annotations

from flask import Request, Response


def conditional_json(response: Response, request: Request) -> Response:
    """``response`` with an ETag and revalidation headers, turned into 304 when ``request`` already has it, for a
    200 JSON answer to GET or HEAD; any other response unchanged."""
    if (request.method not in ("GET", "HEAD") or response.status_code != 200 or response.mimetype != "application/json"
            or response.direct_passthrough or response.is_streamed):
        return response
    response.add_etag()
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response.make_conditional(request)
