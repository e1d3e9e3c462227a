"""The S3 artifact store against an S3-compatible server on loopback (moto's server mode): keyed writes
(multipart when large) read back whole, listing and deletion by prefix, missing keys as FileNotFoundError,
uploads that fail or whose process is killed leave no object (and the previous version intact), and the
API serves bundles and audit artifacts from the bucket through itself."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from db.artifacts import store_from_url
from tests.service.conftest import auth, bundle_bytes, make_settings, upload, wait_for
from tests.service.s3_server import new_bucket, s3_server

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str) -> str:
    return new_bucket(endpoint)


def make_store(endpoint: str, bucket: str, prefix: str = "qs"):  # type: ignore[no-untyped-def]
    return store_from_url(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, multipart_bytes=5 * MiB)


def payload(n: int, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_s3_store_reads_back_small_and_multipart_writes_and_lists_them_by_prefix(endpoint: str, bucket: str,
                                                                               tmp_path: Path) -> None:
    store = make_store(endpoint, bucket)
    big = payload(11 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(big)
    store.put_bytes("audits/1/a.npy", b"first")
    store.put_bytes("audits/1/a.npy", b"second")
    store.put_file("audits/1/sub/big.bin", tmp_path / "big.bin")
    store.put_bytes("audits/10/b.png", big[:100])
    assert store.open("audits/1/a.npy").read() == b"second"
    assert store.open("audits/1/sub/big.bin").read() == big
    head = store.client.head_object(Bucket=bucket, Key="qs/audits/1/sub/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 5 MiB: a multipart upload
    assert head["ContentType"] == "application/octet-stream"
    assert list(store.keys("audits/1")) == ["audits/1/a.npy", "audits/1/sub/big.bin"]
    assert store.exists("audits/10/b.png") and not store.exists("audits/10/c.png")
    assert store.local_path("audits/10/b.png") is None
    assert store.delete_prefix("audits/1/") == 2
    assert list(store.keys("")) == ["audits/10/b.png"]
    store.check()
    assert list(store.keys("")) == ["audits/10/b.png"]  # the probe object is gone again


def test_s3_store_reports_a_missing_key_as_file_not_found_and_refuses_bad_keys(endpoint: str, bucket: str) -> None:
    from workers.engine.errors import InvalidInput

    store = make_store(endpoint, bucket)
    with pytest.raises(FileNotFoundError):
        store.open("audits/1/nothing.npy")
    with pytest.raises(InvalidInput):
        store.put_bytes("../escape", b"x")


def test_s3_artifact_url_without_a_bucket_names_the_setting() -> None:
    from workers.engine.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        store_from_url("s3:///prefix")
    assert err.value.field == "QUIRKSCOPE_ARTIFACTS_URL"


class FailingStream(io.RawIOBase):
    """Yields ``good`` bytes, then raises: a source that breaks in the middle of a multipart upload."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        if self.left <= 0:
            raise OSError("source went away mid-upload")
        n = min(len(buf), self.left)
        buf[:n] = b"\0" * n
        self.left -= n
        return n


def test_a_failed_multipart_upload_is_aborted_and_the_old_object_stays_whole(endpoint: str, bucket: str) -> None:
    store = make_store(endpoint, bucket)
    store.put_bytes("audits/2/t.npy", b"old version")
    with pytest.raises(OSError):
        store.put_stream("audits/2/t.npy", io.BufferedReader(FailingStream(12 * MiB)))
    assert store.open("audits/2/t.npy").read() == b"old version"
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


KILLED_UPLOADER = """
import sys, threading
from db.artifacts import store_from_url
endpoint, bucket, path = sys.argv[1:4]
store = store_from_url(f"s3://{bucket}/qs", endpoint_url=endpoint, multipart_bytes=5 * 1024 * 1024)
parts = []
def hold(**kwargs):  # a slow network: after the first part, the upload never completes
    parts.append(1)
    print("part uploaded", flush=True)
    threading.Event().wait()
store.client.meta.events.register("after-call.s3.UploadPart", hold)
store.put_file("audits/3/big.npy", path)
print("completed", flush=True)
"""


def test_an_upload_whose_process_is_killed_leaves_no_half_object(endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = make_store(endpoint, bucket)
    store.put_bytes("audits/3/big.npy", b"previous run")
    (tmp_path / "big.npy").write_bytes(payload(16 * MiB, seed=1))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPLOADER, endpoint, bucket, str(tmp_path / "big.npy")],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"part uploaded", "the uploader died before its first part"

        def parts_stored() -> int:
            uploads = store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return sum(len(store.client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
                           .get("Parts", [])) for u in uploads)

        wait_for(parts_stored, timeout=30, what="a stored part of the multipart upload")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert store.open("audits/3/big.npy").read() == b"previous run"
    assert list(store.keys("audits/3")) == ["audits/3/big.npy"]
    assert store.abort_incomplete_uploads(older_than_s=0) == 1
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert store.open("audits/3/big.npy").read() == b"previous run"


@pytest.fixture
def s3_app(endpoint: str, bucket: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from db.migrate import upgrade
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'q.db'}"
    upgrade(url)
    settings = make_settings(tmp_path, url, artifacts_url=f"s3://{bucket}/deploy-a",
                             artifacts_endpoint_url=endpoint)
    app = create_app({"TESTING": True}, settings=settings)
    yield app
    app.extensions["quirkscope_db"].engine.dispose()


def test_the_api_stores_bundles_in_s3_and_serves_audit_artifacts_through_itself(s3_app, bucket: str) -> None:
    from db.models import Audit, ModelBundle
    from service.auth import issue_token

    with s3_app.app_context():
        token = issue_token(s3_app.extensions["quirkscope_db"].sessionmaker(), "alpha", "submit,read")
        other = issue_token(s3_app.extensions["quirkscope_db"].sessionmaker(), "beta", "read")
    client = s3_app.test_client()
    bundle = bundle_bytes()  # built once: a zip member's time stamp changes every two seconds
    resp = upload(client, token, bundle)
    assert resp.status_code == 201, resp.get_json()
    store = s3_app.extensions["quirkscope_artifacts"]
    model_key = f"models/{resp.get_json()['sha256']}.zip"
    assert store.open(model_key).read() == bundle
    assert store.client.head_object(Bucket=bucket, Key=f"deploy-a/{model_key}")
    with s3_app.extensions["quirkscope_db"].sessionmaker() as session:
        model = session.get(ModelBundle, resp.get_json()["id"])
        audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status="done")
        session.add(audit)
        session.commit()
        audit_id = audit.id
    tensor = payload(6 * MiB, seed=2)
    store.put_bytes(f"audits/{audit_id}/tensors/Archery__appearance__k0__s0.npy", tensor)
    store.put_bytes(f"audits/{audit_id}/clips/Archery.gif", b"GIF89a...")

    got = client.get(f"/api/v1/audits/{audit_id}/artifacts/tensors/Archery__appearance__k0__s0.npy",
                     headers=auth(token))
    assert got.status_code == 200 and got.get_data() == tensor
    assert "private" in got.headers["Cache-Control"]
    gif = client.get(f"/api/v1/audits/{audit_id}/artifacts/clips/Archery.gif", headers=auth(token))
    assert gif.status_code == 200 and gif.mimetype == "image/gif" and gif.get_data() == b"GIF89a..."
    missing = client.get(f"/api/v1/audits/{audit_id}/artifacts/clips/Bowling.gif", headers=auth(token))
    assert missing.status_code == 404 and missing.get_json()["error"]["field"] == "key"
    foreign = client.get(f"/api/v1/audits/{audit_id}/artifacts/clips/Archery.gif", headers=auth(other))
    assert foreign.status_code == 404
    anonymous = client.get(f"/api/v1/audits/{audit_id}/artifacts/clips/Archery.gif")
    assert anonymous.status_code == 401
    ready = client.get("/api/v1/ready")
    assert ready.get_json()["checks"]["artifacts"] == "ok"
