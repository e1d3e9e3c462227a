"""Model upload: content-addressed and deduplicated, validated without torch, size-limited before reading,
its spool files swept at start when a killed process left them behind."""
from __future__ import annotations

import io
import os
import time

from sqlalchemy import select

from db.models import ModelBundle
from tests.service.conftest import auth, bundle_bytes, make_settings, upload


def test_upload_returns_201_then_200_with_the_same_id_for_the_same_bytes(client, make_token) -> None:
    token = make_token()
    data = bundle_bytes()
    first = upload(client, token, data)
    assert first.status_code == 201, first.json
    assert first.json["name"] == "tiny-twostream" and first.json["classes"][0] == "Archery"
    again = upload(client, token, data)
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"] and again.json["sha256"] == first.json["sha256"]
    listed = client.get("/api/v1/models", headers=auth(token)).json["models"]
    assert [m["id"] for m in listed] == [first.json["id"]]


def test_same_bytes_in_two_projects_share_one_stored_file(client, make_token, app, db_session) -> None:
    data = bundle_bytes()
    a = upload(client, make_token("alpha"), data).json
    b = upload(client, make_token("beta"), data).json
    assert a["id"] != b["id"] and a["sha256"] == b["sha256"]
    keys = {row.artifact_key for row in db_session.scalars(select(ModelBundle))}
    assert keys == {f"models/{a['sha256']}.zip"}
    assert app.extensions["quirkscope_artifacts"].exists(f"models/{a['sha256']}.zip")


def test_upload_that_is_not_a_zip_is_422(client, make_token) -> None:
    resp = upload(client, make_token(), b"definitely not a zip")
    assert resp.status_code == 422
    assert resp.json["error"] == {"code": "invalid_bundle", "field": "bundle", "message": (
        "the bundle is not a zip archive; a bundle is a .zip holding manifest.json and one model file")}


def test_raw_pickle_upload_is_refused_as_unsafe(client, make_token) -> None:
    resp = upload(client, make_token(), b"\x80\x04\x95 a pickled checkpoint")
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "unsafe_bundle" and resp.json["error"]["field"] == "bundle"


def test_pickle_checkpoint_in_bundle_is_refused_as_unsafe(client, make_token) -> None:
    resp = upload(client, make_token(), bundle_bytes({"model.onnx": b"x", "weights.pt": b"\x80\x04pickle"}))
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "unsafe_bundle"
    assert "ONNX" in resp.json["error"]["message"]


def test_bad_manifest_names_the_field(client, make_token) -> None:
    resp = upload(client, make_token(), bundle_bytes(classes=["only-one"]))
    assert resp.status_code == 422
    assert resp.json["error"]["field"] == "manifest.classes"


def test_bundle_without_its_model_file_is_422(client, make_token) -> None:
    resp = upload(client, make_token(), bundle_bytes({}))
    assert resp.status_code == 422 and "model.onnx" in resp.json["error"]["message"]


def test_missing_bundle_field_is_a_validation_error(client, make_token) -> None:
    resp = client.post("/api/v1/models", headers=auth(make_token()), data={}, content_type="multipart/form-data")
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "invalid_input" and resp.json["error"]["field"] == "bundle"


def test_oversized_upload_is_413_from_its_content_length_before_reading(tmp_path, database_url) -> None:
    from db.migrate import upgrade
    from service.app import create_app
    from service.auth import issue_token

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, max_upload_bytes=2048))
    with app.app_context():
        token = issue_token(app.extensions["quirkscope_db"].sessionmaker(), "alpha", "submit")

    class CountingBody(io.BytesIO):
        """Records how much of the body the server read: the limit must be enforced from the header."""

        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            CountingBody.consumed += len(data)
            return data

    body = CountingBody(b"x" * 999_999)
    resp = app.test_client().post("/api/v1/models", headers=auth(token), input_stream=body,
                                  content_type="multipart/form-data; boundary=x", content_length=999_999)
    assert CountingBody.consumed == 0
    assert resp.status_code == 413
    assert resp.json["error"]["code"] == "payload_too_large"
    app.extensions["quirkscope_db"].engine.dispose()


def test_json_bodies_have_their_own_smaller_limit(tmp_path, database_url) -> None:
    from db.migrate import upgrade
    from service.app import create_app
    from service.auth import issue_token

    upgrade(database_url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url, max_json_bytes=1000))
    with app.app_context():
        token = issue_token(app.extensions["quirkscope_db"].sessionmaker(), "alpha", "submit")
    resp = app.test_client().post("/api/v1/audits", headers=auth(token),
                                  json={"model_id": 1, "confusion": {"x": "y" * 5000}})
    assert resp.status_code == 413
    app.extensions["quirkscope_db"].engine.dispose()


def test_app_start_deletes_only_spool_files_older_than_the_bound(tmp_path, database_url) -> None:
    """An API killed with SIGKILL mid-upload leaves its spool file: the next start deletes spool files older
    than QUIRKSCOPE_SPOOL_MAX_AGE_S (1 h) and keeps fresh ones (uploads in progress in other gunicorn
    workers) and files that are not spool files."""
    from service.app import create_app

    spool = tmp_path / "home" / "uploads"
    spool.mkdir(parents=True)
    now = time.time()
    ages = {"upload-killed.zip": 2 * 3600, "upload-older.zip": 30 * 86400, "upload-in-progress.zip": 60,
            "operator-notes.txt": 2 * 3600}
    for name, age in ages.items():
        (spool / name).write_bytes(b"PK")
        os.utime(spool / name, (now - age, now - age))
    app = create_app({"TESTING": True}, settings=make_settings(tmp_path, database_url))
    app.extensions["quirkscope_db"].engine.dispose()
    assert sorted(p.name for p in spool.iterdir()) == ["operator-notes.txt", "upload-in-progress.zip"]


def test_an_upload_sweeps_spool_files_a_killed_worker_left_since_the_app_started(client, make_token,
                                                                                 settings) -> None:
    """A gunicorn worker killed mid-upload is replaced without the app starting again: uploads sweep too."""
    from service.api import bundles

    spool = settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for name, age in {"upload-killed.zip": 2 * 3600, "upload-in-progress.zip": 60}.items():
        (spool / name).write_bytes(b"PK")
        os.utime(spool / name, (now - age, now - age))
    bundles._last_sweep.clear()
    assert upload(client, make_token(), bundle_bytes()).status_code == 201
    assert sorted(p.name for p in spool.iterdir()) == ["upload-in-progress.zip"]


def test_the_upload_sweep_runs_at_most_once_per_tenth_of_the_bound(tmp_path) -> None:
    from service.api.bundles import _last_sweep, sweep_spool_now_and_then

    _last_sweep.clear()
    old = tmp_path / "upload-old.zip"
    old.write_bytes(b"PK")
    os.utime(old, (0, 0))
    assert sweep_spool_now_and_then(tmp_path, 3600, now=10_000) == [old]
    old.write_bytes(b"PK")
    os.utime(old, (0, 0))
    assert sweep_spool_now_and_then(tmp_path, 3600, now=10_000 + 359) == []        # within 360 s: not again
    assert sweep_spool_now_and_then(tmp_path, 3600, now=10_000 + 360) == [old]
    assert sweep_spool_now_and_then(tmp_path, 0, now=99_999) == []                  # bound 0: sweeping is off
