"""Cheap report reads: the loader options that fetch an audit's report rows (its model, pairs, their scores and flags,
and the flags' reviews) in a fixed number of queries whatever the number of pairs and flags, artifact links built
from one URL prefix instead of a ``url_for`` per artifact (a report names dozens of artifacts), and the report JSON
of finished audits kept serialized per process, keyed by a version read from the database on every request
(``report_response``)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import lru_cache

from flask import Flask, Response, current_app, request, url_for
from sqlalchemy import Connection
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.interfaces import LoaderOption
from werkzeug.http import generate_etag
from werkzeug.routing import Map

from db.models import Audit, ClassPair, Flag
from db.report_snapshot import load_report_snapshot, report_version, snapshot_version
from workers.audit.report_rows import build_report

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


class ReportBodies:
    """Serialized report bodies with their ETags, the ``maxsize`` most recently used kept; safe to share between the
    threads of a gunicorn worker. It holds what was served, so a key must name everything the body depends on."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._bodies: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._bodies.get(key)
            if found is not None:
                self._bodies.move_to_end(key)
            return found

    def put(self, key: Hashable, body: bytes, etag: str) -> None:
        with self._lock:
            self._bodies[key] = (body, etag)
            self._bodies.move_to_end(key)
            while len(self._bodies) > self.maxsize:
                self._bodies.popitem(last=False)


def init_report_bodies(app: Flask, maxsize: int = 256) -> ReportBodies:
    """Give ``app`` its own ``ReportBodies`` (several apps in one process never share bodies)."""
    bodies = app.extensions["quirkscope_report_bodies"] = ReportBodies(maxsize)
    return bodies


def report_response(conn: Connection, project_id: int, audit_id: int) -> Response | None:
    """The report JSON (``build_report``) of the project's audit ``audit_id`` with its ETag, or None when the project
    has no such audit. Every call reads the report's version (``db.report_snapshot.report_version``: one statement);
    the body of a finished audit with no task still running is served from this app's ``ReportBodies`` while that
    version stands, so a review (or any write the version counts), committed by any process, shows at the next read.
    Other audits are read and serialized afresh each time."""
    found = report_version(conn, project_id, audit_id)
    if found is None:
        return None
    version, final = found
    bodies: ReportBodies = current_app.extensions["quirkscope_report_bodies"]
    key = (audit_id, request.script_root, version)
    cached = bodies.get(key) if final else None
    if cached is None:
        snapshot = load_report_snapshot(conn, project_id, audit_id)
        if snapshot is None:  # deleted since the version was read
            return None
        body = current_app.json.response(build_report(snapshot, artifact_link(audit_id))).get_data()
        cached = body, generate_etag(body)
        if final and snapshot_version(snapshot) == version:  # else it changed in between: keep nothing
            bodies.put(key, *cached)
    response = current_app.response_class(cached[0], mimetype=current_app.json.mimetype)
    response.set_etag(cached[1])
    return response
