"""``GET /metrics``: the API's Prometheus metrics, read at scrape time from the database and the broker, so
every gunicorn worker answers the same (no per-process state to merge): audits by status, work items by
kind and status, flags by code and review state, models, and the depth of the ``gpu`` and ``cpu`` queues.
The counts cover every project, so a scrape needs a bearer token: an API token with the ``metrics`` scope,
or the static ``QUIRKSCOPE_METRICS_TOKEN`` when set; ``QUIRKSCOPE_METRICS_PUBLIC=1`` opens it to anyone (a
deployment that scrapes on a private network)."""
from __future__ import annotations

import logging
from typing import Any, Iterator

from flask import Blueprint, Response, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AUDIT_STATUSES, Audit, Flag, ModelBundle, WorkItem
from service.auth import current_principal
from service.errors_http import NotAuthenticated
from service.extensions import celery_app, db, settings
from workers.tasks.metrics_http import bearer_ok

log = logging.getLogger(__name__)
metrics_blueprint = Blueprint("metrics", __name__)
QUEUES = ("gpu", "cpu")
METRICS_SCOPE = "metrics"


def queue_depths(celery: Any) -> dict[str, int]:
    """Messages waiting in each queue (a queue the broker does not know yet, or an emptied Redis list, is 0)."""
    depths: dict[str, int] = {}
    with celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        for queue in QUEUES:
            try:
                depths[queue] = int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # noqa: BLE001 - kombu raises a transport-specific "not found" for a missing queue
                depths[queue] = 0
    return depths


class ServiceCollector:
    """A prometheus-client collector that reads the rows when scraped."""

    def __init__(self, session: Session, celery: Any) -> None:
        self.session = session
        self.celery = celery

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        audits = GaugeMetricFamily("quirkscope_audits", "Audits by status", labels=["status"])
        counts = dict(self.session.execute(select(Audit.status, func.count()).group_by(Audit.status)).all())
        for status in sorted(set(AUDIT_STATUSES) | set(counts)):
            audits.add_metric([status], counts.get(status, 0))
        yield audits

        items = GaugeMetricFamily("quirkscope_work_items", "Work items by kind and status", labels=["kind", "status"])
        for kind, status, n in self.session.execute(select(WorkItem.kind, WorkItem.status, func.count())
                                                    .group_by(WorkItem.kind, WorkItem.status)).all():
            items.add_metric([kind, status], n)
        yield items

        flags = GaugeMetricFamily("quirkscope_flags", "Flags raised, by code", labels=["code"])
        for code, n in self.session.execute(select(Flag.code, func.count()).group_by(Flag.code)).all():
            flags.add_metric([code], n)
        yield flags

        yield GaugeMetricFamily("quirkscope_models", "Model bundles stored",
                                value=self.session.scalar(select(func.count()).select_from(ModelBundle)) or 0)

        depth = GaugeMetricFamily("quirkscope_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        up = GaugeMetricFamily("quirkscope_broker_up", "1 when the broker answered this scrape")
        try:
            for queue, n in queue_depths(self.celery).items():
                depth.add_metric([queue], n)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the broker as down instead of failing
            log.warning("metrics: broker unreachable: %s", exc)
            up.add_metric([], 0)
        yield depth
        yield up


def _check_scraper() -> None:
    """Let the scrape through when metrics are public, for the static metrics token, or for an API token
    with the ``metrics`` scope (bearer only: a browser's login cookie does not open it); else 401 or 403."""
    conf = settings()
    if conf.metrics_public:
        return
    given = request.headers.get("Authorization", "")
    if conf.metrics_token and bearer_ok(given, conf.metrics_token):
        return
    try:
        current_principal(METRICS_SCOPE, allow_session=False)
    except NotAuthenticated as exc:
        raise NotAuthenticated(f"/metrics needs a bearer token with the '{METRICS_SCOPE}' scope "
                               f"(quirkscope token create --scopes {METRICS_SCOPE})"
                               + (" or the one of QUIRKSCOPE_METRICS_TOKEN" if conf.metrics_token else "")
                               + f": {exc.message}", field="Authorization") from exc


@metrics_blueprint.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    _check_scraper()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(db.session, celery_app()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
