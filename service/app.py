"""The Flask application factory: settings, database, artifact store, error mapping, the ``api`` blueprint
(``/api/v1``, with its OpenAPI document at ``/api/v1/openapi.json``), the ``report`` HTML blueprint, and
the Celery app it enqueues with (built from the same settings and database), and ``/metrics`` (Prometheus).
The web process never imports torch."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Request, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from werkzeug.exceptions import BadRequest

from service.api.bundles import sweep_spool
from service.api.report_reads import init_report_bodies
from service.errors_http import register_error_handlers, validation_error_response
from service.extensions import db
from workers.audit.flag_rates import warm_flag_rates
from workers.celery_app import create_celery_app
from workers.runtime import WorkerContext
from workers.settings import Settings, load_settings

API_VERSION = "1.0.0"
UPLOAD_ENDPOINTS = frozenset({"api.upload_model"})
log = logging.getLogger(__name__)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply for the parser is a JSON error (400), not a
    RecursionError (500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


class ApiRequest(Request):
    """Flask's request, except that a body that is not valid JSON gets a 400 saying why (Flask hides the
    parser's message outside debug mode)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        raise BadRequest(f"the request body is not valid JSON: {e}" if e is not None
                         else "the request body is not JSON (Content-Type: application/json)")


def sweep_stale_spool_files(settings: Settings) -> None:
    """Delete the upload spool files a killed API process left behind (older than ``spool_max_age_s``)."""
    if settings.spool_max_age_s <= 0:
        return
    deleted = sweep_spool(settings.spool_dir, settings.spool_max_age_s)
    if deleted:
        log.info("deleted %d upload spool file(s) older than %ss in %s", len(deleted),
                 settings.spool_max_age_s, settings.spool_dir)


def create_app(config: Mapping[str, Any] | None = None, *, settings: Settings | None = None) -> OpenAPI:
    """Build the app. ``config`` overrides Flask config keys; ``settings`` defaults to the environment."""
    settings = settings or load_settings()
    sweep_stale_spool_files(settings)
    app = OpenAPI(
        __name__,
        info=Info(title="QuirkScope", version=API_VERSION,
                  description="Audit video action-recognition models for dataset quirks."),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        doc_prefix="/api/v1",
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_callback=validation_error_response,
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="quirkscope_session",
        JSON_SORT_KEYS=False,
    )
    app.json = JSONProvider(app)
    app.request_class = ApiRequest
    if config:
        app.config.update(config)
    app.extensions["quirkscope_settings"] = settings
    context = WorkerContext.from_settings(settings)
    db.init_app(app, context.database)
    app.extensions["quirkscope_artifacts"] = context.artifacts
    init_report_bodies(app)
    warm_flag_rates()  # before gunicorn forks (preload_app): not once per worker on its first report read
    app.extensions["celery"] = create_celery_app(settings, context)
    register_error_handlers(app)

    @app.before_request
    def _limit_body_size() -> None:
        # Werkzeug refuses a body over the limit from its Content-Length (or while streaming a chunked
        # one) before the body is read; only the upload endpoint gets the large limit.
        if request.endpoint not in UPLOAD_ENDPOINTS:
            request.max_content_length = settings.max_json_bytes

    from service.api import api_blueprint
    from service.metrics import metrics_blueprint
    from service.pages import pages_blueprint

    app.register_api(api_blueprint)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(metrics_blueprint)
    return app
