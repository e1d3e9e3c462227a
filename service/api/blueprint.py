"""The JSON API blueprint (``/api/v1``) and its scope declarations: every route declares its scope with
``@requires``, checked in a ``before_request`` hook (so an unauthenticated upload is refused before its body
is read)."""
from __future__ import annotations

from typing import Callable, TypeVar

from flask import request
from flask_openapi3 import APIBlueprint

from service.auth import current_principal

F = TypeVar("F", bound=Callable)

api_blueprint = APIBlueprint("api", __name__, url_prefix="/api/v1", abp_security=[{"bearer": []}])

# endpoint function name -> scope it needs (None: public). Endpoints not listed need "read".
ENDPOINT_SCOPES: dict[str, str | None] = {}
ERROR_RESPONSES = {401: None, 403: None, 404: None}


def requires(scope: str | None) -> Callable[[F], F]:
    """Declare the scope a route needs (None for a public route). Put it below the route decorator."""

    def mark(func: F) -> F:
        ENDPOINT_SCOPES[func.__name__] = scope
        return func

    return mark


@api_blueprint.before_request
def _authenticate() -> None:
    name = (request.endpoint or "").rpartition(".")[2]
    scope = ENDPOINT_SCOPES.get(name, "read")
    if scope is not None:
        current_principal(scope)

