"""The JSON API blueprint (``/api/v1``) and its scope declarations: every route declares its scope with
``@requires``, checked in a ``before_request`` hook (so an unauthenticated upload is refused before its body
is read); successful JSON answers to GET carry an ETag (``service.api.conditional``)."""
from __future__ import annotations

from typing import Callable, TypeVar

from flask import Response, request
from flask_openapi3 import APIBlueprint
from werkzeug.exceptions import UnsupportedMediaType

from service.api.conditional import conditional_json
from service.api.schemas import ErrorOut
from service.auth import current_principal

F = TypeVar("F", bound=Callable)

# The errors any route may answer with, all in the one error shape (service/errors_http.py): documented on
# every operation so that a client (and the schema fuzzer) can rely on the document.
ERROR_RESPONSES = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 413: ErrorOut, 415: ErrorOut,
                   422: ErrorOut}
api_blueprint = APIBlueprint("api", __name__, url_prefix="/api/v1", abp_security=[{"bearer": []}],
                             abp_responses=ERROR_RESPONSES)

# endpoint function name -> scope it needs (None: public). Endpoints not listed need "read".
ENDPOINT_SCOPES: dict[str, str | None] = {}
# endpoints whose body is multipart (an upload), not JSON
MULTIPART_ENDPOINTS = frozenset({"upload_model"})


def requires(scope: str | None) -> Callable[[F], F]:
    """Declare the scope a route needs (None for a public route). Put it below the route decorator."""

    def mark(func: F) -> F:
        ENDPOINT_SCOPES[func.__name__] = scope
        return func

    return mark


@api_blueprint.after_request
def _conditional(response: Response) -> Response:
    return conditional_json(response, request)


@api_blueprint.before_request
def _authenticate() -> None:
    name = (request.endpoint or "").rpartition(".")[2]
    scope = ENDPOINT_SCOPES.get(name, "read")
    if scope is not None:
        current_principal(scope)



@api_blueprint.before_request
def _parse_json_body() -> None:
    """A JSON endpoint's body must be JSON: 415 for another content type, 400 naming the syntax error for a
    body that does not parse (instead of a schema error that cannot say what is wrong)."""
    name = (request.endpoint or "").rpartition(".")[2]
    if request.method not in ("POST", "PUT", "PATCH") or name in MULTIPART_ENDPOINTS:
        return
    if not request.is_json:
        raise UnsupportedMediaType(f"send the body as JSON (Content-Type: application/json), not "
                                   f"{request.mimetype or 'an unlabelled body'}")
    request.get_json()  # raises BadRequest naming the JSON error; the parsed body is cached for the route
