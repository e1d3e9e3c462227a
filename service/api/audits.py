"""Audit routes: create (validate the matrix, rank pairs, store rows, enqueue the workers), list across a
model's versions, status with progress, the report JSON (all pairs or one), artifacts, comparison with
another audit, the HTML report, and cancel/delete."""
from __future__ import annotations

import functools
import logging
import mimetypes
from typing import Any, Sequence

from flask import Response, request, send_file, url_for
from flask_openapi3 import Tag
from sqlalchemy import func, select, update
from sqlalchemy.orm import contains_eager, load_only
from sqlalchemy.orm.interfaces import LoaderOption
from werkzeug.wsgi import wrap_file

from db.models import FINISHED_STATUSES, Audit, ClassPair, ModelBundle, WorkItem, utcnow
from db.report_snapshot import load_report_snapshot
from service.api.blueprint import api_blueprint, requires
from service.api.models import get_model
from service.api.report_reads import REPORT_ROWS, artifact_link, report_response
from service.api.schemas import (
    ArtifactPath,
    AuditCreate,
    AuditCreated,
    AuditListOut,
    AuditListQuery,
    AuditOut,
    AuditPath,
    CompareOut,
    ComparePath,
    CompareQuery,
    ComparisonOut,
    ErrorOut,
    PairPath,
    ReportOut,
)
from service.auth import current_principal
from service.errors_http import NotFound, ServiceUnavailable
from service.extensions import artifact_store, db, settings
from service.report_page import render_audit_page
from workers.audit.compare import compare_reports
from workers.audit.confusion import parse_confusion
from workers.audit.ranking import select_audit_pairs
from workers.audit.report_rows import artifact_prefix, audit_status, build_report, compare_audits, pair_dict
from workers.engine.errors import InvalidInput

log = logging.getLogger(__name__)
tag = Tag(name="audits", description="audits of a model (DESIGN 1, 3.4, 3.5)")
START_TASK = "workers.tasks.start_audit"


def no_audit(audit_id: int | str, field: str = "audit_id") -> NotFound:
    """The 404 of an audit the project does not have (or that does not exist), naming ``field``."""
    return NotFound(f"no audit {audit_id} in this project", field=field)


def get_audit(project_id: int, audit_id: int, field: str = "audit_id", *, load: Sequence[LoaderOption] = ()) -> Audit:
    """The project's audit ``audit_id`` (404 naming ``field`` when there is none); ``load``: loader options, e.g.
    ``REPORT_ROWS`` for a route that reads the whole report."""
    if load:
        row = db.session.scalars(select(Audit).where(Audit.id == audit_id, Audit.project_id == project_id)
                                 .options(*load)).first()
    else:
        row = db.session.get(Audit, audit_id)
    if row is None or row.project_id != project_id:
        raise no_audit(audit_id, field)
    return row


def get_report_snapshot(project_id: int, audit_id: int) -> Any:
    """The project's audit ``audit_id`` with its report rows, read as plain objects (``db.report_snapshot``) for the
    routes that only read the report; 404 when the project has no such audit."""
    snapshot = load_report_snapshot(db.session.connection(), project_id, audit_id)
    if snapshot is None:
        raise no_audit(audit_id)
    return snapshot


def resolve_baseline(project_id: int, model: ModelBundle, spec: int | str | None,
                     exclude: int | None = None) -> Audit | None:
    """The audit a release of ``model`` is compared with: ``spec`` an audit id, ``latest`` (the newest finished
    audit of another bundle with the model's name; None on a first release) or ``NAME@VERSION`` (the newest finished
    audit of that version). A baseline must be a finished (done) audit of a model of the same name: anything else
    is an error whose field is ``baseline``."""
    if spec is None:
        return None
    text = str(spec).strip()
    newest_done = (select(Audit).join(ModelBundle, Audit.model_id == ModelBundle.id)
                   .where(Audit.project_id == project_id, Audit.status == "done").order_by(Audit.id.desc()).limit(1))
    if exclude is not None:
        newest_done = newest_done.where(Audit.id != exclude)
    if text == "latest":
        return db.session.scalar(newest_done.where(ModelBundle.name == model.name, ModelBundle.sha256 != model.sha256))
    if text.isdigit():
        if int(text) > 2**31 - 1:  # no such row, and more than the database's integer column holds
            raise no_audit(text, "baseline")
        baseline = get_audit(project_id, int(text), field="baseline")
    elif "@" in text:
        name, _, version = text.rpartition("@")
        baseline = db.session.scalar(newest_done.where(ModelBundle.name == name, ModelBundle.version == version))
        if baseline is None:
            raise NotFound(f"no finished audit of {name} version {version} in this project", field="baseline")
    else:
        raise InvalidInput(f"baseline is an audit id, 'latest' or NAME@VERSION, got {text!r}", field="baseline")
    if baseline.model.name != model.name:
        raise InvalidInput(f"baseline audit {baseline.id} is of model {baseline.model.name!r} "
                           f"{baseline.model.version!r}, not of {model.name!r}: compare releases of one model",
                           field="baseline")
    if baseline.status != "done":
        raise InvalidInput(f"baseline audit {baseline.id} is {baseline.status}, not done", field="baseline")
    return baseline


def enqueue_start(audit_id: int) -> None:
    from service.extensions import celery_app

    celery_app().send_task(START_TASK, args=(audit_id,), queue="cpu")


@api_blueprint.post("/audits", tags=[tag], responses={202: AuditCreated, 404: ErrorOut, 422: ErrorOut, 503: ErrorOut})
@requires("submit")
def create_audit(body: AuditCreate):
    """Validate the confusion matrix against the model's classes, rank the confused pairs, store the audit
    and its pairs, then hand it to the workers. 202 with ``Location`` of the status resource."""
    principal = current_principal("submit")
    session = db.session
    model = get_model(principal.project_id, body.model_id)
    from workers.audit.options import parse_audit_options

    options = parse_audit_options(body.options)
    confusion = body.confusion.get("csv") if set(body.confusion) == {"csv"} else body.confusion
    cm = parse_confusion(confusion, model.classes, max_classes=settings().max_classes)
    if options.top_k > settings().max_top_k:
        raise InvalidInput(f"top_k may be at most {settings().max_top_k}", field="options.top_k")
    ranked = select_audit_pairs(cm, top_k=options.top_k, min_support=options.min_support,
                                min_rate=options.min_rate, explicit=options.pairs)
    if not ranked:
        raise InvalidInput("no pair of classes passes min_support/min_rate; nothing to audit", field="options")
    baseline = resolve_baseline(principal.project_id, model, body.baseline)
    audit = Audit(project_id=principal.project_id, model_id=model.id, baseline_id=baseline.id if baseline else None,
                  options=options.model_dump(mode="json"),
                  confusion=cm.to_dict(), status="queued", stage="plan")
    audit.pairs = [ClassPair(rank=p.rank, class_a=p.a, class_b=p.b, explicit=p.explicit,
                             confusion=p.confusion_json())
                   for p in ranked]
    session.add(audit)
    session.flush()
    session.add(WorkItem(audit_id=audit.id, kind="plan", key=0, enqueued_at=utcnow(),
                         payload={"task": START_TASK, "args": [audit.id], "queue": "cpu"}))
    session.commit()  # commit first, then enqueue: the task must find the rows
    try:
        enqueue_start(audit.id)
    except Exception as exc:  # noqa: BLE001 - any broker failure
        log.exception("audit %s: could not enqueue", audit.id)
        session.execute(update(Audit).where(Audit.id == audit.id).values(
            status="failed", error=f"could not reach the task broker: {exc}", error_code="broker_unavailable"))
        session.commit()
        raise ServiceUnavailable("could not reach the task broker; try again later") from exc
    log.info("audit %s: created for model %s (%d pairs)", audit.id, model.id, len(ranked))
    location = url_for("api.get_audit_status", audit_id=audit.id)
    return {"id": audit.id, "status": audit.status}, 202, {"Location": location}


@api_blueprint.get("/audits", tags=[tag], responses={200: AuditListOut})
@requires("read")
def list_audits(query: AuditListQuery):
    """The project's audits, newest first; ``model=NAME`` lists the audits of every version of a model."""
    principal = current_principal("read")
    stmt = status_rows().where(Audit.project_id == principal.project_id).order_by(Audit.id.desc()).limit(query.limit)
    if query.model:
        stmt = stmt.where(ModelBundle.name == query.model)
    if query.version:
        stmt = stmt.where(ModelBundle.version == query.version)
    if query.status:
        stmt = stmt.where(Audit.status == query.status)
    return {"audits": [audit_status(audit, n_pairs) for audit, n_pairs in db.session.execute(stmt)]}


@functools.cache
def status_rows() -> Any:
    """One statement for audits' status (``audit_status``): each audit with its model and its pair count, loading
    only the columns the status shows -- not the confusion matrix or the plan, which grow with the model's classes
    and which every status poll used to read and decode. Built once (its loader options cost about 2 ms to
    build); each route adds its own ``where``."""
    n_pairs = select(func.count()).where(ClassPair.audit_id == Audit.id).correlate(Audit).scalar_subquery()
    return (select(Audit, n_pairs).join(ModelBundle, Audit.model_id == ModelBundle.id)
            .options(load_only(Audit.id, Audit.project_id, Audit.model_id, Audit.baseline_id, Audit.status,
                               Audit.stage, Audit.options, Audit.progress, Audit.error, Audit.error_code,
                               Audit.timings, Audit.created_at, Audit.started_at, Audit.finished_at),
                     contains_eager(Audit.model).load_only(ModelBundle.id, ModelBundle.name, ModelBundle.version,
                                                           ModelBundle.sha256)))


@api_blueprint.get("/audits/<int:audit_id>", tags=[tag], responses={200: AuditOut, 404: ErrorOut})
@requires("read")
def get_audit_status(path: AuditPath):
    row = db.session.execute(status_rows().where(Audit.id == path.audit_id,
                                                 Audit.project_id == current_principal("read").project_id)).first()
    if row is None:
        raise no_audit(path.audit_id)
    return audit_status(*row)


@api_blueprint.get("/audits/<int:audit_id>/pairs", tags=[tag], responses={200: ReportOut, 404: ErrorOut})
@requires("read")
def get_pairs(path: AuditPath):
    """The report JSON (DESIGN 3.4), pairs in rank order with scores, flags and artifact URLs."""
    response = report_response(db.session.connection(), current_principal("read").project_id, path.audit_id)
    if response is None:
        raise no_audit(path.audit_id)
    return response


@api_blueprint.get("/audits/<int:audit_id>/pairs/<int:rank>", tags=[tag], responses={404: ErrorOut})
@requires("read")
def get_pair(path: PairPath):
    audit = get_report_snapshot(current_principal("read").project_id, path.audit_id)
    for pair in audit.pairs:
        if pair.rank == path.rank:
            return pair_dict(pair, artifact_link(audit.id))
    raise NotFound(f"audit {audit.id} has no pair of rank {path.rank}", field="rank")


@api_blueprint.get("/audits/<int:audit_id>/artifacts/<path:key>", tags=[tag], responses={404: ErrorOut})
@requires("read")
def get_artifact(path: ArtifactPath):
    """One artifact file of the audit (clip, strip, tensor, difference map, report)."""
    audit = get_audit(current_principal("read").project_id, path.audit_id)
    key = artifact_prefix(audit.id) + path.key
    store = artifact_store()
    try:
        exists = store.exists(key)
    except InvalidInput:
        exists = False
    if not exists:
        raise NotFound(f"no artifact {path.key!r} in audit {audit.id}", field="key")
    mimetype = mimetypes.guess_type(key)[0] or "application/octet-stream"
    local = store.local_path(key)
    if local is not None:
        return send_file(local, mimetype=mimetype, conditional=True, max_age=3600)
    # a remote store (S3): streamed through this process, never a public bucket URL
    body = store.open(key)
    response = Response(wrap_file(request.environ, body, buffer_size=256 * 1024), mimetype=mimetype,
                        direct_passthrough=True)
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    return response


@api_blueprint.get("/audits/<int:audit_id>/compare", tags=[tag],
                   responses={200: ComparisonOut, 404: ErrorOut, 422: ErrorOut})
@requires("read")
def compare_with_baseline(path: AuditPath, query: CompareQuery):
    """This audit against a baseline (``?baseline=ID|latest|NAME@VERSION``, default the audit's own): pairs new /
    gone / persisting, findings new / persisting / absent by fingerprint, each with the reviewer decision that
    stands for it (its own review, or the baseline's carried over: a dismissal only while the severity did not
    rise). Without a baseline (a first release) every pair and finding is new."""
    principal = current_principal("read")
    audit = get_audit(principal.project_id, path.audit_id, load=REPORT_ROWS)
    baseline = resolve_baseline(principal.project_id, audit.model, query.baseline, exclude=audit.id) \
        if query.baseline is not None else audit.baseline
    if baseline is None:
        return compare_reports(build_report(audit, artifact_link(audit.id)), None)
    comparison = compare_audits(audit, baseline, artifact_link(audit.id))
    return {k: comparison[k] for k in ("candidate", "baseline", "pairs", "findings", "counts")}


@api_blueprint.get("/audits/<int:audit_id>/compare/<int:other_id>", tags=[tag], responses={200: CompareOut})
@requires("read")
def compare(path: ComparePath):
    """Pairs and flags of this audit that are new, gone or persisting relative to ``other`` (any audit of the
    project); the same comparison as ``/compare?baseline=``, with the older field names besides."""
    principal = current_principal("read")
    audit = get_audit(principal.project_id, path.audit_id)
    other = get_audit(principal.project_id, path.other_id, field="other_id")
    return compare_audits(audit, other, artifact_link(audit.id))


@api_blueprint.get("/audits/<int:audit_id>/report", tags=[tag], responses={404: ErrorOut})
@requires("read")
def get_report_html(path: AuditPath):
    """The audit's report page (HTML), live while the audit runs."""
    audit = get_audit(current_principal("read").project_id, path.audit_id, load=REPORT_ROWS)
    return render_audit_page(audit)


@api_blueprint.delete("/audits/<int:audit_id>", tags=[tag], responses={202: AuditCreated, 404: ErrorOut})
@requires("submit")
def delete_audit(path: AuditPath):
    """Cancel a queued or running audit (202); delete a finished one with its artifacts (204)."""
    session = db.session
    audit = get_audit(current_principal("submit").project_id, path.audit_id)
    if audit.status not in FINISHED_STATUSES:
        done = session.execute(update(Audit).where(Audit.id == audit.id, Audit.status.in_(("queued", "running")))
                               .values(status="cancelled", error="cancelled by request", error_code="cancelled"))
        session.execute(update(WorkItem).where(WorkItem.audit_id == audit.id, WorkItem.status == "queued")
                        .values(status="cancelled"))
        session.commit()
        if done.rowcount:
            log.info("audit %s: cancelled", audit.id)
            return {"id": audit.id, "status": "cancelled"}, 202
        session.refresh(audit)
    if audit.status in FINISHED_STATUSES:
        if session.scalar(select(func.count()).select_from(WorkItem).where(
                WorkItem.audit_id == audit.id, WorkItem.status == "running")):
            return {"id": audit.id, "status": audit.status}, 202  # a task is still finishing; delete later
        session.execute(update(Audit).where(Audit.baseline_id == audit.id).values(baseline_id=None))
        session.delete(audit)
        session.commit()
        artifact_store().delete_prefix(artifact_prefix(audit.id))
        return "", 204
    return {"id": audit.id, "status": audit.status}, 202
