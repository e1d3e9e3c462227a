"""Cheap report reads: the loader options that fetch an audit's report rows (its model, pairs, their scores and flags,
and the flags' reviews) in a fixed number of queries whatever the number of pairs and flags, and artifact links built
from one URL prefix instead of a ``url_for`` per artifact (a report names dozens of artifacts)."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from flask import current_app, url_for
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.interfaces import LoaderOption
from werkzeug.routing import Map

from db.models import Audit, ClassPair, Flag

ARTIFACT_ENDPOINT = "api.get_artifact"

# The audit and its model in one row; then one SELECT ... WHERE IN per collection (pairs, scores, flags, reviews).
REPORT_ROWS: tuple[LoaderOption, ...] = (
    joinedload(Audit.model),
    selectinload(Audit.pairs).selectinload(ClassPair.scores),
    selectinload(Audit.pairs).selectinload(ClassPair.flags).selectinload(Flag.reviews),
)


def artifact_link(audit_id: int) -> Callable[[str], str]:
    """``link(rel)``: the URL of the audit's artifact ``rel``, the same as ``url_for(ARTIFACT_ENDPOINT, ...)`` (the
    route's path converter quotes ``rel``) at the cost of one ``url_for`` for the whole report."""
    marker = "_"
    sample = url_for(ARTIFACT_ENDPOINT, audit_id=audit_id, key=marker)
    if not sample.endswith(marker):  # the key is not the URL's last part any more: build each URL in full
        return lambda rel: url_for(ARTIFACT_ENDPOINT, audit_id=audit_id, key=rel)
    prefix = sample[: -len(marker)]
    quoted = _path_quoter(current_app.url_map)
    return lambda rel: prefix + quoted(rel)


@lru_cache(maxsize=8)
def _path_quoter(url_map: Map) -> Callable[[str], str]:
    """The ``path`` converter's quoting of a key, remembered per key (a pure function of the string; an audit's
    reports name the same keys on every read)."""
    return lru_cache(maxsize=32_768)(url_map.converters["path"](url_map).to_url)
