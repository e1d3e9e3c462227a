"""The service's relational schema (SQLAlchemy 2 typed ORM): projects and their hashed API tokens, model
bundles (content-addressed), audits with their class pairs, visualisations, scores, flags and reviews, and
the work items that Celery tasks claim. Rows are the source of truth; Celery only carries ids."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so that Alembic migrations name the same things on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AUDIT_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED_STATUSES = ("done", "failed", "cancelled")
ITEM_STATUSES = ("queued", "running", "done", "failed", "cancelled")
VERDICTS = ("confirmed", "dismissed", "needs-data")
SCOPES = ("submit", "read", "review", "metrics")  # metrics: scrape /metrics (counts of every project)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def scope_set(scopes: str) -> frozenset[str]:
    """The scopes of a token's comma-separated ``scopes`` column. Pure."""
    return frozenset(s for s in scopes.split(",") if s)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


class Project(Base):
    """A tenant: every model, audit and token belongs to exactly one project."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    trusted_pt2: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token. Only ``sha256(token)`` is stored; ``prefix`` (first characters) identifies it in logs."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(64))  # comma separated subset of SCOPES
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    project: Mapped[Project] = relationship()

    @property
    def scope_set(self) -> frozenset[str]:
        return scope_set(self.scopes)


class ModelBundle(Base):
    """An uploaded bundle. The bytes live once in the artifact store under ``models/<sha256>.zip``; a
    project that uploads the same bytes again gets the same row back."""

    __tablename__ = "model_bundles"
    __table_args__ = (UniqueConstraint("project_id", "sha256"),
                      Index("ix_model_bundles_project_name", "project_id", "name"))
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(20))
    classes: Mapped[list[Any]] = mapped_column()
    manifest: Mapped[dict[str, Any]] = mapped_column()
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    artifact_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Audit(Base):
    """One audit of one model against one confusion matrix. ``stage`` moves plan -> visualise -> evaluate -> score ->
    report -> finished by conditional UPDATEs, so a stage starts once however often its trigger fires."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model_bundles.id", ondelete="CASCADE"), index=True)
    baseline_id: Mapped[int | None] = mapped_column(ForeignKey("audits.id", ondelete="SET NULL"), default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(16), default="plan")
    options: Mapped[dict[str, Any]] = mapped_column()
    confusion: Mapped[dict[str, Any]] = mapped_column()  # {"classes": [...], "matrix": [[...]]}, manifest order
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the pipeline planned: streams, levels, ...
    report_key: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    model: Mapped[ModelBundle] = relationship()
    baseline: Mapped["Audit | None"] = relationship(remote_side=[id], foreign_keys=[baseline_id])
    pairs: Mapped[list["ClassPair"]] = relationship(order_by="ClassPair.rank", cascade="all, delete-orphan",
                                                    passive_deletes=True)


class ClassPair(Base):
    """A confused pair chosen for the audit, in rank order (DESIGN 3.3)."""

    __tablename__ = "class_pairs"
    __table_args__ = (UniqueConstraint("audit_id", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    class_a: Mapped[str] = mapped_column(String(200))
    class_b: Mapped[str] = mapped_column(String(200))
    confusion: Mapped[dict[str, Any]] = mapped_column()  # {"a_as_b", "b_as_a", "counts"}
    explicit: Mapped[bool] = mapped_column(Boolean, default=False)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"clips": ..., "difference": ...}, keys relative
    scored: Mapped[bool] = mapped_column(Boolean, default=False)
    scores: Mapped[list["PairScore"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    flags: Mapped[list["Flag"]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                               order_by="Flag.id")


class Visualization(Base):
    """One optimised input: class x stream x temporal level x seed, with the config that made it."""

    __tablename__ = "visualizations"
    __table_args__ = (UniqueConstraint("audit_id", "class_name", "stream", "level", "seed"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    class_name: Mapped[str] = mapped_column(String(200))
    stream: Mapped[str] = mapped_column(String(100))
    level: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column()
    objective: Mapped[float | None] = mapped_column(Float, default=None)  # the target logit reached
    kappa: Mapped[float | None] = mapped_column(Float, default=None)
    probability: Mapped[float | None] = mapped_column(Float, default=None)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # kind -> artifact key
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PairScore(Base):
    """One score of a pair (DESIGN 4.4), per stream where the score is per stream (``stream`` '' otherwise)."""

    __tablename__ = "pair_scores"
    __table_args__ = (UniqueConstraint("pair_id", "name", "stream"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("class_pairs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(100), default="")
    value: Mapped[Any] = mapped_column(JSON)


class Flag(Base):
    """A flag raised on a pair, for a person to review."""

    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("pair_id", "code", "stream"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("class_pairs.id", ondelete="CASCADE"))
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(100), default="")
    severity: Mapped[str] = mapped_column(String(16), default="medium")  # high | medium | low
    peak_xy: Mapped[list[Any] | None] = mapped_column(default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the finding's identity across re-audits and releases (workers.audit.flags.flag_fingerprint)
    fingerprint: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)
    pair: Mapped[ClassPair] = relationship(back_populates="flags")
    reviews: Mapped[list["Review"]] = relationship(order_by="Review.id", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class Review(Base):
    """A reviewer's verdict on a flag; the newest review of a flag is its current verdict."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    reviewer: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkItem(Base):
    """A unit of work of an audit (a chunk of objectives, a pair to score, the report). Tasks claim it by a
    conditional UPDATE; ``attempts`` counts claims, so a task that keeps killing its worker is failed with a
    reason after a bounded number of attempts instead of looping."""

    __tablename__ = "work_items"
    __table_args__ = (UniqueConstraint("audit_id", "kind", "key"), Index("ix_work_items_status", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # plan | visualise | evaluate | score | report
    key: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)  # "host:pid" of the claimant
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
