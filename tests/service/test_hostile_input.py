"""The hostile-input corpus over HTTP: malformed confusion matrices, hostile bundles, bad JSON, wrong content
types, huge query parameters and path ids. Each case must get its 4xx with the JSON error naming the
problem (never a 500 or a traceback), and leave the database and the artifact store (plus the upload spool)
exactly as they were, listed before and after. Runs on SQLite, and on PostgreSQL when configured (it is the
stricter of the two: integer and string widths). The CLI half is tests/test_hostile_cli.py; uploads cut off
while streaming, against a real server, are at the end of this file."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import MetaData, select

from db.migrate import upgrade
from db.models import ClassPair, Flag
from tests import hostile
from tests.service.conftest import CLASSES, CONFUSION, PG_URL, auth, fresh_postgres_schema, make_settings, wait_for

MAX_UPLOAD = 8 * 1024 * 1024  # the corpus app's upload limit (the streaming cases send more)
MAX_JSON = 16 * 1024 * 1024
INT_OVERFLOW = 2**64


# ------------------------------------------------------------------------------------------------ the app

@dataclass
class Seeded:
    app: Any
    client: Any
    token: str
    reader: str
    model_id: int
    audit_id: int
    flag_id: int
    root: Path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """One app for the whole corpus (every case must leave it unchanged), with a project holding a model,
    an audit with a pair and a flag."""
    from service.app import create_app
    from service.auth import issue_token

    root = tmp_path_factory.mktemp("hostile")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'q.db'}"
    else:
        if not PG_URL:
            pytest.skip("PostgreSQL tests need QUIRKSCOPE_TEST_DATABASE_URL (see tests/service/start_servers.sh)")
        url = fresh_postgres_schema(PG_URL)
    upgrade(url)
    settings = make_settings(root, url, max_upload_bytes=MAX_UPLOAD, max_json_bytes=MAX_JSON)
    app = create_app({"TESTING": True}, settings=settings)
    factory = app.extensions["quirkscope_db"].sessionmaker
    with app.app_context():
        token = issue_token(factory(), "alpha", "submit,read,review")
        reader = issue_token(factory(), "alpha", "read")
    client = app.test_client()
    up = client.post("/api/v1/models", headers=auth(token), content_type="multipart/form-data",
                     data={"bundle": (io.BytesIO(hostile.bundle()), "b.zip")})
    assert up.status_code == 201, up.json
    model_id = up.json["id"]
    created = client.post("/api/v1/audits", headers=auth(token), json={"model_id": model_id, "confusion": CONFUSION})
    assert created.status_code == 202, created.json
    audit_id = created.json["id"]
    with factory() as s:
        pair = s.scalar(select(ClassPair).where(ClassPair.audit_id == audit_id, ClassPair.rank == 1))
        flag = Flag(pair_id=pair.id, audit_id=audit_id, code="SHARED_EVIDENCE", stream="appearance")
        s.add(flag)
        s.commit()
        flag_id = flag.id
    yield Seeded(app, client, token, reader, model_id, audit_id, flag_id, root)
    app.extensions["quirkscope_db"].engine.dispose()


def listing(seeded: Seeded) -> tuple[dict[str, list[tuple]], list[tuple[str, str]]]:
    """Every row of every table, and every file (path, sha256) under the artifact store and the home folder
    (where uploads are spooled)."""
    engine = seeded.app.extensions["quirkscope_db"].engine
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        rows = {t.name: sorted((tuple(r) for r in conn.execute(t.select())), key=repr) for t in meta.sorted_tables}
    files = sorted((p.relative_to(seeded.root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in seeded.root.rglob("*") if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm")
                   and not p.name.endswith(("-wal", "-shm", "-journal")))
    return rows, files


# ------------------------------------------------------------------------------------------------ the corpus

Build = Callable[[Seeded], dict[str, Any]]


@dataclass(frozen=True)
class Hostile:
    id: str
    method: str
    path: str  # formatted with model_id, audit_id, flag_id
    build: Build  # -> keyword arguments of the test client's request (after headers=auth(token))
    status: int
    says: str  # a fragment of the error message (case-insensitive)
    field: str | None = None  # the error's field starts with this
    token: str = "token"


def audit_body(confusion: Any = None, **changes: Any) -> Build:
    def build(s: Seeded) -> dict[str, Any]:
        body = {"model_id": s.model_id, "confusion": CONFUSION if confusion is None else confusion} | changes
        return {"json": body}
    return build


def raw_audit_body(text: Callable[[Seeded], str], content_type: str = "application/json") -> Build:
    return lambda s: {"data": text(s).encode() if isinstance(text(s), str) else text(s), "content_type": content_type}


def matrix(rows: list[list[Any]], classes: list[Any] | None = None) -> dict:
    return {"classes": CLASSES if classes is None else classes, "matrix": rows}


GOOD = CONFUSION["matrix"]


def cell(i: int, j: int, value: Any) -> list[list[Any]]:
    rows = [list(r) for r in GOOD]
    rows[i][j] = value
    return rows


def raw_matrix_json(cell_text: str) -> Callable[[Seeded], str]:
    """A body whose matrix holds a literal Python's json accepts but JSON does not (NaN, Infinity)."""
    rows = json.dumps(GOOD).replace("30", cell_text, 1)
    return lambda s: (f'{{"model_id": {s.model_id}, '
                      f'"confusion": {{"classes": {json.dumps(CLASSES)}, "matrix": {rows}}}}}')


def upload(data: bytes | Callable[[], bytes], filename: str = "bundle.zip") -> Build:
    return lambda s: {"data": {"bundle": (io.BytesIO(data() if callable(data) else data), filename)},
                      "content_type": "multipart/form-data"}


def csv_body(text: str) -> Build:
    return audit_body({"csv": text})


BIG_CLASSES = [f"c{i}" for i in range(1_000_000)]

CONFUSION_CASES = [
    Hostile("confusion-nan-cell", "POST", "/api/v1/audits", raw_audit_body(raw_matrix_json("NaN")), 422,
            "finite", "confusion.matrix[0][1]"),
    Hostile("confusion-infinite-cell", "POST", "/api/v1/audits", raw_audit_body(raw_matrix_json("Infinity")), 422,
            "finite", "confusion.matrix[0][1]"),
    Hostile("confusion-negative-count", "POST", "/api/v1/audits", audit_body(matrix(cell(2, 3, -5))), 422,
            ">= 0", "confusion.matrix[2][3]"),
    Hostile("confusion-fractional-count", "POST", "/api/v1/audits", audit_body(matrix(cell(1, 0, 0.25))), 422,
            "whole numbers", "confusion.matrix[1][0]"),
    Hostile("confusion-huge-count", "POST", "/api/v1/audits", audit_body(matrix(cell(1, 0, 10**30))), 422,
            "more than the limit", "confusion.matrix[1][0]"),
    Hostile("confusion-boolean-count", "POST", "/api/v1/audits", audit_body(matrix(cell(1, 0, True))), 422,
            "must be a count", "confusion.matrix[1][0]"),
    Hostile("confusion-non-numeric-count", "POST", "/api/v1/audits", audit_body(matrix(cell(3, 3, "seventy"))), 422,
            "must be a count", "confusion.matrix[3][3]"),
    Hostile("confusion-ragged-row", "POST", "/api/v1/audits", audit_body(matrix([r[:3] if i == 2 else r
                                                                                for i, r in enumerate(GOOD)])),
            422, "expected 4", "confusion.matrix[2]"),
    Hostile("confusion-too-few-rows", "POST", "/api/v1/audits", audit_body(matrix(GOOD[:3])), 422, "square",
            "confusion.matrix"),
    Hostile("confusion-row-not-a-list", "POST", "/api/v1/audits", audit_body(matrix([GOOD[0], 7, GOOD[2], GOOD[3]])),
            422, "must be a list", "confusion.matrix[1]"),
    Hostile("confusion-matrix-a-string", "POST", "/api/v1/audits", audit_body(matrix("[[1]]")), 422,
            "list of rows", "confusion.matrix"),
    Hostile("confusion-million-classes", "POST", "/api/v1/audits", audit_body({"classes": BIG_CLASSES, "matrix": []}),
            422, "more than the limit", "confusion.classes"),
    Hostile("confusion-duplicate-class", "POST", "/api/v1/audits",
            audit_body(matrix(GOOD, ["Archery", "Bowling", "Archery", "Diving"])), 422, "appears twice",
            "confusion.classes[2]"),
    Hostile("confusion-unknown-class", "POST", "/api/v1/audits",
            audit_body(matrix(GOOD, ["Archery", "Bowling", "Cycling", "Karate"])), 422, "Karate", "confusion"),
    Hostile("confusion-empty-class-name", "POST", "/api/v1/audits",
            audit_body(matrix(GOOD, ["Archery", "", "Cycling", "Diving"])), 422, "non-empty", "confusion.classes[1]"),
    Hostile("confusion-class-name-not-a-string", "POST", "/api/v1/audits",
            audit_body(matrix(GOOD, ["Archery", 7, "Cycling", "Diving"])), 422, "non-empty", "confusion.classes[1]"),
    Hostile("confusion-empty-object", "POST", "/api/v1/audits", audit_body({}), 422, "missing", "confusion"),
    Hostile("confusion-empty-classes", "POST", "/api/v1/audits", audit_body({"classes": [], "matrix": []}), 422,
            "empty", "confusion.classes"),
    Hostile("confusion-class-without-examples", "POST", "/api/v1/audits", audit_body(matrix(
        [GOOD[0], GOOD[1], GOOD[2], [0, 0, 0, 0]])), 422, "no examples", "confusion"),
    Hostile("confusion-unknown-key", "POST", "/api/v1/audits", audit_body(matrix(GOOD) | {"weights": [1]}), 422,
            "unknown key", "confusion"),
    Hostile("confusion-labels-unpaired", "POST", "/api/v1/audits",
            audit_body({"classes": CLASSES, "y_true": [0, 1, 2], "y_pred": [0, 1]}), 422, "pair up", "confusion"),
    Hostile("confusion-labels-unknown", "POST", "/api/v1/audits",
            audit_body({"classes": CLASSES, "y_true": [0, 1, 2, 3], "y_pred": [0, 1, 9, "Karate"]}), 422,
            "neither class names nor indices", "confusion.y_pred"),
    Hostile("confusion-csv-header-only", "POST", "/api/v1/audits", csv_body(",Archery,Bowling,Cycling,Diving\n"),
            422, "rows of counts", "confusion"),
    Hostile("confusion-csv-unknown-row", "POST", "/api/v1/audits", csv_body(
        ",Archery,Bowling,Cycling,Diving\nArchery,1,0,0,0\nKarate,0,1,0,0\nCycling,0,0,1,0\nDiving,0,0,0,1\n"),
            422, "Karate", "confusion"),
    Hostile("confusion-csv-nan-cell", "POST", "/api/v1/audits", csv_body(
        ",Archery,Bowling,Cycling,Diving\nArchery,nan,0,0,0\nBowling,0,1,0,0\nCycling,0,0,1,0\nDiving,0,0,0,1\n"),
            422, "finite", "confusion"),
    Hostile("confusion-not-an-object", "POST", "/api/v1/audits", audit_body([[1, 2], [3, 4]]), 422, "confusion",
            "confusion"),
    Hostile("confusion-deeply-nested", "POST", "/api/v1/audits",
            raw_audit_body(lambda s: f'{{"model_id": {s.model_id}, "confusion": {{"classes": {"[" * 100_000}'
                                     f'{"]" * 100_000}}}}}'), 400, "json", None),
]

OPTION_CASES = [
    Hostile("options-top-k-zero", "POST", "/api/v1/audits", audit_body(options={"top_k": 0}), 422,
            "greater than or equal to 1", "options.top_k"),
    Hostile("options-steps-huge", "POST", "/api/v1/audits", audit_body(options={"steps": 10**9}), 422,
            "less than or equal", "options.steps"),
    Hostile("options-seeds-not-a-number", "POST", "/api/v1/audits", audit_body(options={"seeds": "three"}), 422,
            "integer", "options.seeds"),
    Hostile("options-unknown-option", "POST", "/api/v1/audits", audit_body(options={"rm_rf": True}), 422,
            "extra", "options.rm_rf"),
    Hostile("options-pair-of-unknown-class", "POST", "/api/v1/audits",
            audit_body(options={"pairs": [["Archery", "Karate"]]}), 422, "Karate", "options.pairs"),
    Hostile("options-min-rate-excludes-all", "POST", "/api/v1/audits", audit_body(options={"min_rate": 1.0}), 422,
            "nothing to audit", "options"),
]

BODY_CASES = [
    Hostile("json-truncated", "POST", "/api/v1/audits", raw_audit_body(lambda s: '{"model_id": 1, "confusion": {'),
            400, "json", None),
    Hostile("json-not-utf8", "POST", "/api/v1/audits",
            lambda s: {"data": b'{"model_id": "\xff\xfe"}', "content_type": "application/json"}, 400, "json", None),
    Hostile("json-array-body", "POST", "/api/v1/audits", raw_audit_body(lambda s: "[1, 2, 3]"), 422, "dictionary",
            None),
    Hostile("json-empty-body", "POST", "/api/v1/audits", raw_audit_body(lambda s: ""), 400, "json", None),
    Hostile("content-type-text-plain", "POST", "/api/v1/audits",
            raw_audit_body(lambda s: json.dumps({"model_id": s.model_id, "confusion": CONFUSION}), "text/plain"), 415,
            "json", None),
    Hostile("content-type-form-for-json", "POST", "/api/v1/audits",
            lambda s: {"data": {"model_id": str(s.model_id)}, "content_type": "application/x-www-form-urlencoded"},
            415, "json", None),
    Hostile("model-id-missing", "POST", "/api/v1/audits", lambda s: {"json": {"confusion": CONFUSION}}, 422,
            "required", "model_id"),
    Hostile("model-id-a-string", "POST", "/api/v1/audits", audit_body(model_id="first"), 422, "integer", "model_id"),
    Hostile("model-id-overflow", "POST", "/api/v1/audits", audit_body(model_id=INT_OVERFLOW), 422, "less than",
            "model_id"),
    Hostile("model-id-negative", "POST", "/api/v1/audits", audit_body(model_id=-1), 422, "greater than", "model_id"),
    Hostile("model-id-unknown", "POST", "/api/v1/audits", audit_body(model_id=2**31 - 1), 404, "no model",
            "model_id"),
    Hostile("baseline-unknown", "POST", "/api/v1/audits", audit_body(baseline=999_999), 404, "no audit", "baseline"),
    Hostile("baseline-overflow", "POST", "/api/v1/audits", audit_body(baseline=INT_OVERFLOW), 422, "less than",
            "baseline"),
    Hostile("audit-body-extra-key", "POST", "/api/v1/audits", audit_body(priority="urgent"), 422, "extra",
            "priority"),
    Hostile("json-body-over-limit", "POST", "/api/v1/audits",
            lambda s: {"data": b'{"pad": "' + b"x" * (MAX_JSON + 10) + b'"}', "content_type": "application/json"},
            413, "exceeds the limit", None),
    Hostile("review-verdict-unknown", "POST", "/api/v1/flags/{flag_id}/review",
            lambda s: {"json": {"verdict": "lgtm"}}, 422, "confirmed", "verdict"),
    Hostile("review-note-too-long", "POST", "/api/v1/flags/{flag_id}/review",
            lambda s: {"json": {"verdict": "confirmed", "note": "n" * 20_000}}, 422, "at most", "note"),
    Hostile("review-body-not-json", "POST", "/api/v1/flags/{flag_id}/review",
            lambda s: {"data": "verdict=confirmed", "content_type": "application/x-www-form-urlencoded"}, 415, "json",
            None),
    Hostile("review-flag-overflow", "POST", f"/api/v1/flags/{INT_OVERFLOW}/review",
            lambda s: {"json": {"verdict": "confirmed"}}, 422, "less than", "flag_id"),
]

QUERY_CASES = [
    Hostile("query-limit-zero", "GET", "/api/v1/audits?limit=0", lambda s: {}, 422, "greater than", "limit"),
    Hostile("query-limit-overflow", "GET", f"/api/v1/audits?limit={10**30}", lambda s: {}, 422, "less than", "limit"),
    Hostile("query-limit-not-a-number", "GET", "/api/v1/audits?limit=all", lambda s: {}, 422, "integer", "limit"),
    Hostile("query-status-unknown", "GET", "/api/v1/audits?status=hacked", lambda s: {}, 422, "queued", "status"),
    Hostile("query-model-name-huge", "GET", "/api/v1/audits?model=" + "m" * 200_000, lambda s: {}, 422, "at most",
            "model"),
    Hostile("query-version-huge", "GET", "/api/v1/audits?version=" + "v" * 200_000, lambda s: {}, 422, "at most",
            "version"),
    Hostile("path-audit-id-overflow", "GET", f"/api/v1/audits/{INT_OVERFLOW}", lambda s: {}, 422, "less than",
            "audit_id"),
    Hostile("path-audit-id-int32-overflow", "GET", f"/api/v1/audits/{2**31}", lambda s: {}, 422, "less than",
            "audit_id"),
    Hostile("path-pair-rank-overflow", "GET", "/api/v1/audits/{audit_id}/pairs/" + str(INT_OVERFLOW), lambda s: {},
            422, "less than", "rank"),
    Hostile("path-compare-other-overflow", "GET", "/api/v1/audits/{audit_id}/compare/" + str(INT_OVERFLOW),
            lambda s: {}, 422, "less than", "other_id"),
    Hostile("path-flag-overflow", "GET", f"/api/v1/flags/{INT_OVERFLOW}", lambda s: {}, 422, "less than", "flag_id"),
    Hostile("path-model-overflow", "GET", f"/api/v1/models/{INT_OVERFLOW}", lambda s: {}, 422, "less than",
            "model_id"),
    Hostile("delete-audit-overflow", "DELETE", f"/api/v1/audits/{INT_OVERFLOW}", lambda s: {}, 422, "less than",
            "audit_id"),
    Hostile("artifact-key-dot-dot", "GET", "/api/v1/audits/{audit_id}/artifacts/../../models/x.zip", lambda s: {},
            404, "no artifact", "key"),
    Hostile("artifact-key-encoded-dot-dot", "GET", "/api/v1/audits/{audit_id}/artifacts/%2E%2E/%2E%2E/secret_key",
            lambda s: {}, 404, "no artifact", "key"),
    Hostile("artifact-key-absolute", "GET", "/api/v1/audits/{audit_id}/artifacts//etc/passwd",
            lambda s: {"follow_redirects": True}, 404,
            "no artifact", "key"),
    Hostile("artifact-key-too-long", "GET", "/api/v1/audits/{audit_id}/artifacts/" + "a/" * 400 + "x.png",
            lambda s: {}, 422, "at most", "key"),
]

UPLOAD_CASES = [
    Hostile("upload-field-missing", "POST", "/api/v1/models", lambda s: {"data": {"other": (io.BytesIO(b"x"), "x")},
                                                                         "content_type": "multipart/form-data"},
            422, "bundle", "bundle"),
    Hostile("upload-as-json", "POST", "/api/v1/models", lambda s: {"json": {"bundle": "UEsDBA=="}}, 422, "bundle",
            "bundle"),
    Hostile("upload-bundle-as-text-field", "POST", "/api/v1/models",
            lambda s: {"data": {"bundle": "not a file"}, "content_type": "multipart/form-data"}, 422, "bundle",
            "bundle"),
    Hostile("upload-empty-file", "POST", "/api/v1/models", upload(b""), 422, "not a zip", "bundle"),
    Hostile("upload-random-bytes", "POST", "/api/v1/models", upload(bytes(range(256)) * 64), 422, "not a zip",
            "bundle"),
    Hostile("upload-pickle-as-bundle", "POST", "/api/v1/models", upload(hostile.PICKLE), 422, "pickle", "bundle"),
    Hostile("upload-pickle-posing-as-onnx", "POST", "/api/v1/models", upload(hostile.bundle(model=hostile.PICKLE)),
            422, "pickle", "model.onnx"),
    Hostile("upload-pickle-posing-as-safetensors", "POST", "/api/v1/models",
            upload(hostile.bundle("weights.safetensors", hostile.PICKLE, fmt="safetensors")), 422, "pickle",
            "weights.safetensors"),
    Hostile("upload-pickle-posing-as-pt2", "POST", "/api/v1/models",
            upload(hostile.bundle("model.pt2", hostile.PICKLE, fmt="torch.export")), 422, "pickle", "model.pt2"),
    Hostile("upload-torchscript-posing-as-onnx", "POST", "/api/v1/models",
            upload(hostile.bundle(model=hostile.torchscript_like_zip())), 422, "torchscript", "model.onnx"),
    Hostile("upload-checkpoint-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("weights.pth", hostile.PICKLE)])), 422, "pickle", "bundle"),
    Hostile("upload-torchscript-members", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("code/__torch__.py", b"x"), ("data.pkl", hostile.PICKLE)])), 422,
            "torchscript", "bundle"),
    Hostile("upload-zip-bomb-declared", "POST", "/api/v1/models", upload(hostile.zip_bomb_declared()), 422,
            "over the limit", "bundle"),
    Hostile("upload-zip-bomb-real", "POST", "/api/v1/models", upload(hostile.zip_bomb_real), 422, "over the limit",
            "bundle"),
    Hostile("upload-dot-dot-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("../../etc/cron.d/evil", b"* * * * * root sh")])), 422, "'..'", "bundle"),
    Hostile("upload-absolute-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("/etc/passwd", b"root::0:0")])), 422, "absolute", "bundle"),
    Hostile("upload-backslash-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("..\\..\\evil.bat", b"x")])), 422, "backslash", "bundle"),
    Hostile("upload-symlink-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[hostile.symlink_member("labels.txt", "/etc/passwd")])), 422, "symlink",
            "bundle"),
    Hostile("upload-symlink-as-model", "POST", "/api/v1/models",
            upload(hostile.zip_of([("manifest.json", json.dumps(hostile.manifest()).encode()),
                                   hostile.symlink_member("model.onnx", "/etc/shadow")])), 422, "symlink", "bundle"),
    Hostile("upload-duplicate-member", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("manifest.json", b"{}")])), 422, "twice", "bundle"),
    Hostile("upload-encrypted-member", "POST", "/api/v1/models",
            upload(hostile.with_encrypted_flag(hostile.bundle(extra=[("notes.txt", b"x")]), "notes.txt")), 422,
            "encrypted", "bundle"),
    Hostile("upload-no-manifest", "POST", "/api/v1/models", upload(hostile.zip_of([("model.onnx", b"x")])), 422,
            "no manifest", "manifest"),
    Hostile("upload-manifest-not-json", "POST", "/api/v1/models",
            upload(hostile.zip_of([("manifest.json", b"{name: tiny"), ("model.onnx", b"x")])), 422, "not valid JSON",
            "manifest"),
    Hostile("upload-manifest-over-1mib", "POST", "/api/v1/models",
            upload(hostile.zip_of([("manifest.json", b" " * (2 * 1024**2) + b"{}"), ("model.onnx", b"x")])), 422,
            "over", "manifest"),
    Hostile("upload-manifest-classes-a-string", "POST", "/api/v1/models", upload(hostile.bundle(classes="Archery")),
            422, "classes", "manifest.classes"),
    Hostile("upload-manifest-one-class", "POST", "/api/v1/models", upload(hostile.bundle(classes=["Archery"])), 422,
            "at least 2", "manifest.classes"),
    Hostile("upload-manifest-unknown-format", "POST", "/api/v1/models", upload(hostile.bundle(fmt="pickle")), 422,
            "format", "manifest.format"),
    Hostile("upload-manifest-name-huge", "POST", "/api/v1/models", upload(hostile.bundle(name="n" * 10_000)), 422,
            "at most", "manifest.name"),
    Hostile("upload-manifest-gigantic-shape", "POST", "/api/v1/models", upload(hostile.bundle(inputs=[
        {"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, 100_000, 100_000, 100_000]}])),
            422, "elements", "manifest.inputs"),
    Hostile("upload-manifest-negative-shape", "POST", "/api/v1/models", upload(hostile.bundle(inputs=[
        {"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, -4, 16, 16]}])), 422, "positive",
            "manifest.inputs"),
    Hostile("upload-two-model-files", "POST", "/api/v1/models",
            upload(hostile.bundle(extra=[("weights.safetensors", b"x")])), 422, "several model files",
            "model.onnx"),
    Hostile("upload-wrong-model-file", "POST", "/api/v1/models", upload(hostile.bundle("weights.safetensors")), 422,
            "no model.onnx", "model.onnx"),
    Hostile("upload-over-limit-content-length", "POST", "/api/v1/models",
            upload(lambda: b"PK\x03\x04" + bytes(MAX_UPLOAD + 1024)), 413, "exceeds the limit", None),
    Hostile("upload-without-submit-scope", "POST", "/api/v1/models", upload(hostile.bundle(version="2")), 403,
            "submit", "scope", token="reader"),
]

CASES = CONFUSION_CASES + OPTION_CASES + BODY_CASES + QUERY_CASES + UPLOAD_CASES


def test_the_corpus_has_at_least_sixty_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 60


def send(seeded: Seeded, case: Hostile):  # type: ignore[no-untyped-def]
    token = seeded.token if case.token == "token" else seeded.reader
    path = case.path.format(model_id=seeded.model_id, audit_id=seeded.audit_id, flag_id=seeded.flag_id)
    kwargs = case.build(seeded)
    return seeded.client.open(path, method=case.method, headers=auth(token), **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_its_4xx_naming_the_problem_and_changes_nothing(seeded: Seeded, case: Hostile) -> None:
    before = listing(seeded)
    resp = send(seeded, case)
    assert resp.status_code == case.status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.is_json, resp.get_data(as_text=True)[:300]
    error = resp.json["error"]
    assert set(error) == {"code", "message", "field"}
    assert case.says.lower() in error["message"].lower(), error
    assert "Traceback" not in error["message"]
    if case.field is not None:
        assert (error["field"] or "").startswith(case.field), error
    assert listing(seeded) == before


# ------------------------------------------------------------------------ uploads cut off while streaming

@dataclass
class Server:
    port: int
    finished: list[str]  # paths of the requests the app has finished with (response sent or abandoned)


@pytest.fixture(scope="module")
def server(seeded: Seeded):  # type: ignore[no-untyped-def]
    from werkzeug.serving import make_server

    finished: list[str] = []

    def counted(environ, start_response):  # type: ignore[no-untyped-def]
        try:
            yield from seeded.app(environ, start_response)
        finally:
            finished.append(environ["PATH_INFO"])

    srv = make_server("127.0.0.1", 0, counted, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield Server(srv.server_port, finished)
    srv.shutdown()


def raw_http(port: int, head: bytes, body_chunks: list[bytes], *, close_early: bool = False) -> bytes:
    """Send ``head`` then each chunk; return what the server answered (b"" when it closed first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for piece in body_chunks:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what it answered is what counts
        if close_early:
            return b""
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def multipart_head(port: int, token: str, boundary: str, length: int | None) -> bytes:
    lines = ["POST /api/v1/models HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {token}",
             f"Content-Type: multipart/form-data; boundary={boundary}", "Connection: close"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(parts: list[bytes]) -> list[bytes]:
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


def test_chunked_upload_over_the_limit_is_cut_off_while_streaming_with_413(seeded: Seeded, server: Server) -> None:
    before = listing(seeded)
    boundary = "qsboundary"
    preamble = (f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; filename="b.zip"\r\n'
                "Content-Type: application/zip\r\n\r\n").encode() + b"PK\x03\x04"
    piece = bytes(1024 * 1024)
    parts = [preamble] + [piece] * (3 * MAX_UPLOAD // len(piece))  # three times the limit, no Content-Length
    answer = raw_http(server.port, multipart_head(server.port, seeded.token, boundary, None), chunked(parts))
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1] == b"413", answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2].decode())
    assert body["error"]["code"] == "payload_too_large" and "limit" in body["error"]["message"]
    assert listing(seeded) == before


def test_upload_whose_client_vanishes_mid_body_leaves_nothing_behind(seeded: Seeded, server: Server) -> None:
    before = listing(seeded)
    boundary = "qsboundary"
    preamble = (f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; filename="b.zip"\r\n'
                "Content-Type: application/zip\r\n\r\n").encode()
    declared = MAX_UPLOAD - 1024
    done = len(server.finished)
    raw_http(server.port, multipart_head(server.port, seeded.token, boundary, declared),
             [preamble + bytes(declared // 4)], close_early=True)
    wait_for(lambda: len(server.finished) > done, timeout=30, what="the server to give up on the cut upload")
    assert server.finished[-1] == "/api/v1/models"
    # nothing of the cut upload stayed (rows, artifacts, spool files), and the next request is served
    assert listing(seeded) == before
    ok = seeded.client.get("/api/v1/models", headers=auth(seeded.token))
    assert ok.status_code == 200 and [m["version"] for m in ok.json["models"]] == ["1.0"]
