"""Liveness (``/health``: the process answers) and readiness (``/ready``: database, broker and artifact
store all reachable)."""
from __future__ import annotations

from flask_openapi3 import Tag
from sqlalchemy import text

from service.api.blueprint import api_blueprint, requires
from service.api.schemas import HealthOut, ReadyOut
from service.extensions import artifact_store, celery_app, db

tag = Tag(name="health")


@api_blueprint.get("/health", tags=[tag], security=[], responses={200: HealthOut})
@requires(None)
def health():
    return {"status": "ok"}


def _check(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports any failure
        return f"error: {type(exc).__name__}: {exc}"[:300]


def _check_broker() -> None:
    with celery_app().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@api_blueprint.get("/ready", tags=[tag], security=[], responses={200: ReadyOut, 503: ReadyOut})
@requires(None)
def ready():
    checks = {
        "database": _check(lambda: db.session.execute(text("SELECT 1"))),
        "broker": _check(_check_broker),
        "artifacts": _check(lambda: artifact_store().check()),
    }
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ok else "unavailable", "checks": checks}, (200 if ok else 503)
