"""The Flask application factory: settings, database, artifact store, error mapping, the ``api`` blueprint
(``/api/v1``, with its OpenAPI document at ``/api/v1/openapi.json``), the ``report`` HTML blueprint, and
the Celery app it enqueues with (built from the same settings and database), and ``/metrics`` (Prometheus).
The web process never imports torch."""
from __future__ import annotations

from typing import Any, Mapping

from flask import request
from flask_openapi3 import Info, OpenAPI

from service.errors_http import register_error_handlers, validation_error_response
from service.extensions import db
from workers.celery_app import create_celery_app
from workers.runtime import WorkerContext
from workers.settings import Settings, load_settings

API_VERSION = "1.0.0"
UPLOAD_ENDPOINTS = frozenset({"api.upload_model"})


def create_app(config: Mapping[str, Any] | None = None, *, settings: Settings | None = None) -> OpenAPI:
    """Build the app. ``config`` overrides Flask config keys; ``settings`` defaults to the environment."""
    settings = settings or load_settings()
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
    if config:
        app.config.update(config)
    app.extensions["quirkscope_settings"] = settings
    context = WorkerContext.from_settings(settings)
    db.init_app(app, context.database)
    app.extensions["quirkscope_artifacts"] = context.artifacts
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
