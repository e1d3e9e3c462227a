"""The one place where errors become HTTP answers: the QuirkScopeError hierarchy (plus the few errors only
HTTP has: 401, 403, 404, 409, 413) mapped to status codes and the JSON body
``{"error": {"code", "message", "field"}}``; also the handler for request-schema validation errors."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from workers.engine.errors import BundleError, InvalidInput, QuirkScopeError

log = logging.getLogger(__name__)


class NotAuthenticated(QuirkScopeError):
    code = "unauthorized"


class PermissionDenied(QuirkScopeError):
    code = "forbidden"


class NotFound(QuirkScopeError):
    code = "not_found"


class Conflict(QuirkScopeError):
    code = "conflict"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class ServiceUnavailable(QuirkScopeError):
    code = "unavailable"


# Most specific first; the first match wins.
STATUS_BY_ERROR: tuple[tuple[type[QuirkScopeError], int], ...] = (
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (ServiceUnavailable, 503),
    (BundleError, 422),
    (InvalidInput, 422),
    (QuirkScopeError, 400),
)


def http_status(exc: QuirkScopeError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


def error_response(code: str, message: str, field: str | None, status: int) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "field": field}})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="quirkscope"'
    return resp


def quirkscope_error_response(exc: QuirkScopeError) -> Response:
    return error_response(exc.code, exc.message, exc.field, http_status(exc))


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's ``validation_error_callback``: a schema failure in the same error shape."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    loc = tuple(first.get("loc", ()))
    # flask-openapi3 validates body/query/form models; their first loc element is the field name.
    field = _loc_to_field(loc) or None
    msg = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    return error_response("invalid_input", f"{field}: {msg}" if field else msg, field, 422)


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(QuirkScopeError)
    def _quirkscope(exc: QuirkScopeError) -> Response:
        return quirkscope_error_response(exc)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response | HTTPException:
        limit = request.max_content_length
        return error_response("payload_too_large", f"request body exceeds the limit of {limit} bytes", None, 413)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response | HTTPException:
        if not _wants_json():
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(code, exc.description or exc.name or "error", None, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response | HTTPException:
        if isinstance(exc, HTTPException):
            return _http(exc)
        if isinstance(exc, (OperationalError, InterfaceError)) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated):
            log.warning("database unavailable on %s %s: %s", request.method, request.path, exc.orig)
            resp = error_response("database_unavailable", "the database is unavailable; try again shortly", None, 503)
            resp.headers["Retry-After"] = "5"
            return resp
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("internal_error", "internal server error", None, 500)
