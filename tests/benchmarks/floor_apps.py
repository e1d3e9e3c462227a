"""The smallest apps gunicorn can serve a report read from, for ``tests/benchmarks/http_floor.py``: what the web
stack itself costs per request on this machine, with none of QuirkScope's work. ``bare`` is a plain WSGI callable
returning a fixed JSON body; ``flask_app`` is a Flask app with one route that checks for a bearer token and returns
the same body. Neither touches a database."""
from __future__ import annotations

import json

from flask import Flask, Response, request

BODY = json.dumps({"audit": {"id": 1, "status": "done"},
                   "pairs": [{"rank": k, "a": f"Class{k}A", "b": f"Class{k}B", "scores": {"x": 0.5, "y": 0.25},
                              "flags": [{"code": "LOCALIZED_CUE", "severity": "medium", "message": "m" * 200}]}
                             for k in range(1, 4)]}).encode()


def bare(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def create_flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/api/v1/audits/<int:audit_id>/report")
    def report(audit_id: int) -> Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return Response(b'{"error": "no token"}', 401, content_type="application/json")
        return Response(BODY, 200, content_type="application/json")

    return app


flask_app = create_flask_app()
