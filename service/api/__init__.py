"""The JSON API (``/api/v1``): the blueprint (``service.api.blueprint``) with every route module registered."""
from __future__ import annotations

from service.api import audits, flags, health, models  # noqa: F401  (registers the routes)
from service.api.blueprint import ENDPOINT_SCOPES, api_blueprint, requires  # noqa: F401
