"""Scale-out on real Redis + PostgreSQL, artifacts on an S3-compatible server (moto on loopback): one audit of
the reference model is shared by two gpu-queue worker processes started by ``quirkscope worker --gpus 0,1``
(each did part of its chunks, read from ``WorkItem.worker``), and ends with the same flags and the same
stored tensors as the same audit run by one worker (``--gpus 0``) with the same seeds. The workers' metrics
ports count the chunks each ran and its sample-iterations; the API's ``/metrics`` counts both audits."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select

from db.models import Audit, Flag, Visualization, WorkItem
from tests.service.conftest import PG_URL, REDIS_URL, fresh_postgres_schema, wait_for
from tests.service.stack import REPO, Stack, running_stack
from tests.service.test_audit_end_to_end import summary
from tests.service.test_metrics import samples

pytestmark = pytest.mark.slow
OPTIONS = {"top_k": 1, "seeds": 2, "levels": 2, "steps": 8}
CHUNK_SIZE = 2  # 1 pair -> 2 classes x 2 levels x 2 seeds = 8 objectives -> 4 chunks to share


def free_port_pair() -> int:
    """A port p with p and p + 1 free on loopback."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports")


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


@contextmanager
def gpu_workers(stack: Stack, gpus: str, metrics_port: int, log: Path) -> Iterator[subprocess.Popen]:
    """``quirkscope worker --gpus <gpus>`` as a process of its own; yields once every worker answers a ping."""
    names = {f"gpu{g}" for g in gpus.split(",")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "-v", "worker", "--gpus", gpus,
                                 "--metrics-port", str(metrics_port)], cwd=REPO, env=dict(os.environ),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        celery = stack.app.extensions["celery"]

        def answering() -> bool:
            assert proc.poll() is None, f"the worker supervisor exited: {log.read_text()[-3000:]}"
            nodes = {name.split("@")[0] for reply in celery.control.ping(timeout=1.0) for name in reply}
            return names <= nodes

        wait_for(answering, timeout=180, interval=0.5, what=f"gpu workers {sorted(names)}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # passed on to each worker: warm shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def run_audit(stack: Stack, reference: tuple[Path, dict]) -> tuple[int, dict]:
    """Upload the reference bundle (201, or 200 when it is there already), audit it, wait for the report."""
    bundle, confusion = reference
    status, model = stack.request("POST", "/api/v1/models", files={"bundle": ("model.zip", bundle.read_bytes())})
    assert status in (200, 201), model
    status, created = stack.request("POST", "/api/v1/audits",
                                    {"model_id": model["id"], "confusion": confusion, "options": OPTIONS})
    assert status == 202, created

    def finished() -> dict | None:
        state = stack.request("GET", f"/api/v1/audits/{created['id']}")[1]
        return state if state["status"] in ("done", "failed", "cancelled") else None

    state = wait_for(finished, timeout=300, interval=0.5, what=f"audit {created['id']} to finish")
    assert state["status"] == "done", state["error"]
    return created["id"], stack.request("GET", f"/api/v1/audits/{created['id']}/pairs")[1]


def chunk_workers(stack: Stack, audit_id: int) -> dict[str, int]:
    """worker (host:pid) -> visualise chunks of the audit it finished."""
    with stack.app.extensions["quirkscope_db"].sessionmaker() as session:
        items = session.scalars(select(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.kind == "visualise"))
        out: dict[str, int] = {}
        for item in items:
            assert item.status == "done", (item.key, item.status, item.error)
            out[item.worker] = out.get(item.worker, 0) + 1
        return out


def stored_tensors(stack: Stack, audit_id: int) -> dict[tuple, bytes]:
    import numpy as np

    store = stack.app.extensions["quirkscope_artifacts"]
    with stack.app.extensions["quirkscope_db"].sessionmaker() as session:
        rows = session.scalars(select(Visualization).where(Visualization.audit_id == audit_id)).all()
        return {(r.class_name, r.stream, r.level, r.seed):
                np.load(io.BytesIO(store.open(f"audits/{audit_id}/{r.artifacts['npy']}").read())) for r in rows}


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not (REDIS_URL and PG_URL):
        pytest.skip("needs QUIRKSCOPE_TEST_REDIS_URL and QUIRKSCOPE_TEST_DATABASE_URL (tests/service/start_servers.sh)")
    pytest.importorskip("moto.server")
    import redis

    from tests.service.s3_server import new_bucket, s3_server

    redis.Redis.from_url(REDIS_URL).flushdb()
    with s3_server() as endpoint:
        yield {"QUIRKSCOPE_BROKER_URL": REDIS_URL, "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL,
               "QUIRKSCOPE_DATABASE_URL": fresh_postgres_schema(PG_URL),
               "QUIRKSCOPE_ARTIFACTS_URL": f"s3://{new_bucket(endpoint)}/cluster",
               "QUIRKSCOPE_ARTIFACTS_ENDPOINT_URL": endpoint, "QUIRKSCOPE_CHUNK_SIZE": str(CHUNK_SIZE)}


def test_two_gpu_workers_share_one_audit_and_match_the_one_worker_run(cluster_env, reference, tmp_path: Path) -> None:
    import numpy as np

    with running_stack(tmp_path / "home", cluster_env, queues=("cpu",)) as stack:
        with gpu_workers(stack, "0", free_port_pair(), tmp_path / "one-worker.log"):
            single_id, single = run_audit(stack, reference)
        port = free_port_pair()
        with gpu_workers(stack, "0,1", port, tmp_path / "two-workers.log"):
            shared_id, shared = run_audit(stack, reference)
            per_gpu = [scrape(port), scrape(port + 1)]
        assert not any((tmp_path / "home" / "metrics").iterdir()), "a stopped worker leaves no metrics files"
        api = samples(stack.request("GET", "/metrics")[1].decode())

        with stack.app.extensions["quirkscope_db"].sessionmaker() as session:
            plan = session.get(Audit, shared_id).plan
            flag_rows = session.scalars(select(Flag)).all()
        chunks = plan["n_chunks"]
        assert plan["chunk_size"] == CHUNK_SIZE and chunks == 4
        assert len(chunk_workers(stack, single_id)) == 1
        sharing = chunk_workers(stack, shared_id)
        print(f"\nchunks of the 2-worker audit by worker: {sharing}")
        assert len(sharing) == 2 and sum(sharing.values()) == chunks

        assert summary(shared) == summary(single)
        one, two = stored_tensors(stack, single_id), stored_tensors(stack, shared_id)
        assert one.keys() == two.keys() and len(one) == plan["n_objectives"] * len(plan["streams"])
        assert all(np.array_equal(one[k], two[k]) for k in one)

        done = [m[("quirkscope_task_duration_seconds_count", (("outcome", "done"), ("stage", "visualise")))]
                for m in per_gpu]
        assert sorted(done) == sorted(sharing.values())
        iterations = [m[("quirkscope_sample_iterations_total", (("device", "cpu"), ("gpu", gpu)))]
                      for m, gpu in zip(per_gpu, ("0", "1"))]
        assert all(n > 0 for n in iterations) and sum(iterations) == plan["n_objectives"] * OPTIONS["steps"]

        assert api[("quirkscope_audits", (("status", "done"),))] == 2
        assert api[("quirkscope_work_items", (("kind", "visualise"), ("status", "done")))] == 2 * chunks
        codes = [f["code"] for report in (single, shared) for p in report["pairs"] for f in p["flags"]]
        assert len(flag_rows) == len(codes)
        for code in set(codes):
            assert api[("quirkscope_flags", (("code", code),))] == codes.count(code)
