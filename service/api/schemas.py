"""Declared request and response schemas of the JSON API (pydantic); flask-openapi3 validates requests
with them and builds the OpenAPI document at ``/api/v1/openapi.json`` from the same classes."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from flask_openapi3 import FileStorage
from pydantic import BaseModel, ConfigDict, Field, field_validator
from werkzeug.datastructures import FileStorage as UploadedFile

Verdict = Literal["confirmed", "dismissed", "needs-data"]
# Row ids and ranks are 32-bit integer columns: a larger number is refused here (422) instead of reaching the
# database, where PostgreSQL and SQLite would fail on it.
RowId = Annotated[int, Field(ge=1, le=2**31 - 1)]
AuditStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


# ------------------------------------------------------------------------------------------------- models

class ModelUploadForm(BaseModel):
    bundle: FileStorage = Field(description="The bundle as a .zip: manifest.json plus model.onnx, "
                                            "weights.safetensors or model.pt2 (DESIGN 3.1)")

    @field_validator("bundle", mode="after")
    @classmethod
    def _a_file_part(cls, value: Any) -> Any:
        if not isinstance(value, UploadedFile):
            raise ValueError("must be a file part (a .zip) of a multipart/form-data body, not a text field")
        return value


class ModelPath(BaseModel):
    model_id: RowId


class ModelOut(BaseModel):
    id: int
    sha256: str
    name: str
    version: str
    format: str
    classes: list[str]
    size_bytes: int
    created_at: dt.datetime


class ModelListOut(BaseModel):
    models: list[ModelOut]


class ModelListQuery(BaseModel):
    sha256: str | None = Field(default=None, max_length=64,
                               description="only the bundle with these bytes (a client uploads when there is none)")
    name: str | None = Field(default=None, description="only the versions of this model")


# ------------------------------------------------------------------------------------------------- audits

class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: RowId = Field(description="id returned by POST /models")
    confusion: dict[str, Any] = Field(
        description='{"classes": [...], "matrix": [[...]]} (rows = true class), {"classes", "y_true", '
                    '"y_pred"}, or {"csv": "<header row + one row per class>"} (DESIGN 3.2)')
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="audit options: top_k, pairs, levels, seeds, steps, ...")
    baseline: RowId | str | None = Field(
        default=None, description="what to compare with (a release gate's baseline): an audit id, ``latest`` (the "
                                  "newest finished audit of another bundle of the same model name; none on a first "
                                  "release) or ``NAME@VERSION`` (the newest finished audit of that version)")


class AuditPath(BaseModel):
    audit_id: RowId


class PairPath(BaseModel):
    audit_id: RowId
    rank: RowId


class ComparePath(BaseModel):
    audit_id: RowId
    other_id: RowId


class ArtifactPath(BaseModel):
    audit_id: RowId
    key: str = Field(max_length=500)


class AuditListQuery(BaseModel):
    model: str | None = Field(default=None, max_length=200, description="model name: audits of every version of it")
    version: str | None = Field(default=None, max_length=100)
    status: AuditStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)


class AuditCreated(BaseModel):
    id: int
    status: AuditStatus


class ModelRef(BaseModel):
    id: int
    name: str
    version: str
    sha256: str


class AuditOut(BaseModel):
    id: int
    status: AuditStatus
    stage: str
    progress: float = Field(ge=0, le=1)
    error: ErrorDetail | None = None
    timings: dict[str, Any]
    options: dict[str, Any]
    model: ModelRef
    baseline: int | None = None
    n_pairs: int
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class AuditListOut(BaseModel):
    audits: list[AuditOut]


class ReportOut(BaseModel):
    """The report JSON of DESIGN 3.4: ``{"audit": {...}, "pairs": [...]}``."""

    model_config = ConfigDict(extra="allow")
    audit: dict[str, Any]
    pairs: list[dict[str, Any]]


class CompareQuery(BaseModel):
    baseline: str | None = Field(default=None, description="an audit id, ``latest`` or ``NAME@VERSION`` (see "
                                                           "AuditCreate.baseline); default: the audit's own baseline")


class ComparisonPart(BaseModel):
    new: list[dict[str, Any]]
    gone: list[dict[str, Any]]
    persisting: list[dict[str, Any]]


class AuditRef(BaseModel):
    id: int | str | None = None
    model: dict[str, Any]


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="allow")

    verdict: Verdict
    source: str = Field(description="candidate (a review of this audit), baseline (carried over) or review")
    note: str | None = None
    by: str | None = None


class FindingOut(BaseModel):
    """One finding (a flag, identified across audits by its fingerprint) in a comparison."""

    model_config = ConfigDict(extra="allow")

    fingerprint: str
    a: str
    b: str
    code: str
    stream: str | None = None
    class_name: str | None = None
    severity: str | None = None
    message: str = ""
    flag_id: int | None = None
    baseline_state: Literal["new", "unchanged", "updated", "absent"]
    decision: ReviewDecision | None = None
    reopened: bool = Field(description="dismissed on the baseline, but its severity rose: undecided again")
    baseline: dict[str, Any] | None = None


class FindingParts(BaseModel):
    new: list[FindingOut]
    persisting: list[FindingOut]
    absent: list[FindingOut]


class ComparisonOut(BaseModel):
    """``workers.audit.compare.compare_reports``: pairs new / gone / persisting, findings new / persisting / absent."""

    candidate: AuditRef
    baseline: AuditRef | None = None
    pairs: ComparisonPart
    findings: FindingParts
    counts: dict[str, int]


class CompareOut(ComparisonOut):
    """The comparison, plus the fields of the older ``/compare/<other>`` answer."""

    audit: int
    other: int
    flags: ComparisonPart


# -------------------------------------------------------------------------------------------------- flags

class FlagPath(BaseModel):
    flag_id: RowId


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    note: str = Field(default="", max_length=10_000)


class ReviewOut(BaseModel):
    id: int
    flag_id: int
    verdict: Verdict
    note: str
    by: str
    at: dt.datetime


class FlagRateOut(BaseModel):
    precision: float | None = Field(description="share of this code's flags that named a planted cue rightly")
    recall: float | None = Field(description="share of the planted cues this code is meant for that it found")
    fired: int
    correct: int
    expected: int
    found: int | None = Field(None, description="planted cues this code found (recall = found / expected)")
    precision_interval: list[float] | None = Field(
        None, description="95% Wilson interval of the precision, [low, high]; null when the code never fired")
    recall_interval: list[float] | None = Field(
        None, description="95% Wilson interval of the recall, [low, high]; null when it was never expected")
    split: str
    cases: int
    generated: str
    rules_commit: str | None = Field(
        None, description="the commit whose flag rules the rates were measured with (+changes: with uncommitted "
                          "changes to them); null when unknown")


class FlagOut(BaseModel):
    id: int
    audit_id: int
    pair: dict[str, Any]
    code: str
    stream: str
    severity: str
    peak_xy: list[float] | None = None
    message: str
    class_name: str | None = Field(default=None, description="the class the flag is about, when it is one class")
    fingerprint: str = Field(description="the finding's identity across re-audits and releases of the model: "
                                         "unordered class pair, code, stream and class")
    benchmark: FlagRateOut | None = Field(default=None, description="how often this flag code was right on the "
                                                                  "planted-shortcut benchmark; null when not measured")
    review: ReviewOut | None = None
    reviews: list[ReviewOut]


# ------------------------------------------------------------------------------------------------- health

class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str]
