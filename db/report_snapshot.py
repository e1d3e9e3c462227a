"""An audit's report rows read with five plain SELECTs (the audit with its model, its pairs, their scores, its flags,
their reviews) into simple read-only objects that carry the attribute names ``workers.audit.report_rows`` reads
(``audit.model``, ``audit.pairs``, ``pair.scores``, ``pair.flags``, ``flag.pair``, ``flag.reviews`` ...). No ORM
instances, identity map or lazy loads: the report JSON routes read many rows and change none, and building ORM
objects cost them more than the queries. Every call reads the database afresh (no cache).

``report_version`` reads, in one statement, what a report can still change by (``snapshot_version`` computes the
same from a loaded snapshot), so that a caller may keep a finished audit's serialized report keyed by it."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from sqlalchemy import Connection, bindparam, func, select

from db.models import FINISHED_STATUSES, Audit, ClassPair, Flag, ModelBundle, PairScore, Review, WorkItem

MODEL_FIELDS = ("id", "name", "version", "sha256", "manifest", "classes")
_audits, _models, _pairs = Audit.__table__, ModelBundle.__table__, ClassPair.__table__
_scores, _flags, _reviews = PairScore.__table__, Flag.__table__, Review.__table__
_work = WorkItem.__table__


_AUDIT = bindparam("audit_id")
# Built once: the statements differ only in their parameters.
HEAD = (select(_audits, *(_models.c[f].label(f"model__{f}") for f in MODEL_FIELDS))
        .join(_models, _audits.c.model_id == _models.c.id)
        .where(_audits.c.id == _AUDIT, _audits.c.project_id == bindparam("project_id")))
PAIRS = select(_pairs).where(_pairs.c.audit_id == _AUDIT).order_by(_pairs.c.rank)
SCORES = select(_scores).join(_pairs, _scores.c.pair_id == _pairs.c.id).where(_pairs.c.audit_id == _AUDIT)
REVIEWS = (select(_reviews).join(_flags, _reviews.c.flag_id == _flags.c.id).where(_flags.c.audit_id == _AUDIT)
           .order_by(_reviews.c.id))
FLAGS = select(_flags).where(_flags.c.audit_id == _AUDIT).order_by(_flags.c.id)


def load_report_snapshot(conn: Connection, project_id: int, audit_id: int) -> SimpleNamespace | None:
    """The audit ``audit_id`` of project ``project_id`` with its model, pairs (rank order; scores, flags in id order,
    each flag's reviews in id order and its ``pair``), or None when the project has no such audit."""
    key = {"audit_id": audit_id}
    head = conn.execute(HEAD, {**key, "project_id": project_id}).first()
    if head is None:
        return None
    fields = dict(head._mapping)
    model = SimpleNamespace(**{f: fields.pop(f"model__{f}") for f in MODEL_FIELDS})
    pairs = [SimpleNamespace(**row._mapping, scores=[], flags=[]) for row in conn.execute(PAIRS, key)]
    by_id = {p.id: p for p in pairs}
    for row in conn.execute(SCORES, key):
        by_id[row.pair_id].scores.append(SimpleNamespace(**row._mapping))
    reviews: dict[int, list[SimpleNamespace]] = defaultdict(list)
    for row in conn.execute(REVIEWS, key):
        reviews[row.flag_id].append(SimpleNamespace(**row._mapping))
    for row in conn.execute(FLAGS, key):
        pair = by_id.get(row.pair_id)
        if pair is not None:
            pair.flags.append(SimpleNamespace(**row._mapping, pair=pair, reviews=reviews.get(row.id, [])))
    return SimpleNamespace(**fields, model=model, pairs=pairs)


# The audit's columns a report shows and that still change once it has finished (a status set by cancel or failure
# while a task is still running, a baseline deleted), and the number and highest id of its reviews (what a reviewer
# adds). Its pairs, scores and flags are written by tasks only, and a finished audit's tasks claim nothing more
# (workers.tasks.claims); one still running after a cancel makes the version not final. Each subquery costs the
# database about 0.12 ms of planning per read (psycopg2 prepares nothing), so there are no more than these.
VERSION_COLUMNS = ("status", "stage", "progress", "error_code", "baseline_id", "created_at", "finished_at")
_audit_reviews = _reviews.join(_flags, _reviews.c.flag_id == _flags.c.id)
VERSION = select(
    *(_audits.c[c] for c in VERSION_COLUMNS),
    *(select(agg(_reviews.c.id)).select_from(_audit_reviews).where(_flags.c.audit_id == _audits.c.id)
      .scalar_subquery() for agg in (func.count, func.max)),
    select(func.count(_work.c.id)).where(_work.c.audit_id == _audits.c.id, _work.c.status == "running")
    .scalar_subquery(),
).where(_audits.c.id == _AUDIT, _audits.c.project_id == bindparam("project_id"))


def report_version(conn: Connection, project_id: int, audit_id: int) -> tuple[tuple, bool] | None:
    """``(version, final)`` of the audit ``audit_id`` of project ``project_id``, or None when the project has no such
    audit. ``version`` equals ``snapshot_version`` of the snapshot read now; ``final``: the audit has finished and no
    task of it is still running, so its report changes only with its version (a review, a deletion)."""
    row = conn.execute(VERSION, {"audit_id": audit_id, "project_id": project_id}).first()
    if row is None:
        return None
    *version, running = tuple(row)
    return tuple(version), row.status in FINISHED_STATUSES and running == 0


def snapshot_version(snapshot: SimpleNamespace) -> tuple:
    """The version (``report_version``) of the rows ``snapshot`` holds."""
    reviews = [r.id for p in snapshot.pairs for f in p.flags for r in f.reviews]
    return (*(getattr(snapshot, c) for c in VERSION_COLUMNS), len(reviews), max(reviews, default=None))
