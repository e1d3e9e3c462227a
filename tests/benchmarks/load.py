"""Load on the real stack, on loopback only, stopping by itself: the API under gunicorn (deploy/gunicorn.conf.py),
Redis, PostgreSQL (a fresh schema), a ``gpu`` and a ``cpu`` worker process and the reaper. Three phases:
N concurrent audit submissions (tiny audits of a four-class ONNX model), waiting for every audit to end, then M
concurrent reads of a finished audit's report JSON. Each burst is sent from one asyncio loop, every request on its own
connection, all launched at once (``tests/benchmarks/http_burst.py``). Prints requests/s, p50/p99 latency, errors and
the CPU per request of this client, of gunicorn and of the PostgreSQL server (with psutil) per phase, and how many
audits ended done / failed / not at all. gunicorn runs with its access log off (``QUIRKSCOPE_ACCESS_LOG=off``; on by
default, about 0.3 ms of CPU a request).

    python tests/benchmarks/load.py [--audits 50] [--reads 500] [--json out.json]

Needs QUIRKSCOPE_TEST_DATABASE_URL and QUIRKSCOPE_TEST_REDIS_URL (tests/service/start_servers.sh); the Redis
database given there is flushed."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.http_burst import build_request, burst  # noqa: E402  (after the path is set)

LOAD_OPTIONS = {"top_k": 1, "seeds": 1, "levels": 1, "steps": 2}


def http(method: str, url: str, token: str, body: bytes | None = None,
         content_type: str | None = None) -> tuple[int, bytes, float]:
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            data = resp.read()
            return resp.status, data, time.perf_counter() - t0
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.perf_counter() - t0
    except OSError as err:
        return 0, str(err).encode(), time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def server_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by process ``pid`` and its children (gunicorn's master and workers), or None without
    psutil."""
    try:
        import psutil
    except ImportError:
        return None
    master = psutil.Process(pid)
    return _cpu_s([master, *master.children(recursive=True)])


def database_cpu_s() -> float | None:
    """CPU seconds used so far by the PostgreSQL server on this machine (whoever its backends serve): its postmaster,
    the backends alive now and those that have ended (a pool's overflow connections come and go), or None without
    psutil or PostgreSQL."""
    try:
        import psutil
    except ImportError:
        return None
    names = ("postgres", "postmaster")
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in names and proc.parent() is not None and proc.parent().name() not in names:
                ended = proc.cpu_times()
                return _cpu_s([proc, *proc.children()]) + ended.children_user + ended.children_system
        except psutil.Error:
            continue
    return None


def _cpu_s(procs: list) -> float:  # type: ignore[type-arg]
    import psutil

    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _per_request_ms(before: float | None, after: float | None, n: int) -> float | None:
    return round(1000 * (after - before) / n, 2) if before is not None and after is not None else None


def measured_burst(port: int, requests: Sequence[bytes], server_pid: int | None = None) -> dict:
    """``requests`` sent at once to 127.0.0.1:``port`` (``http_burst.burst``): the figures of the phase, with the CPU
    milliseconds per request of this client process, of the server's processes (``server_pid`` and its children)
    and of PostgreSQL."""
    n = len(requests)
    server0, database0 = (server_cpu_s(server_pid) if server_pid else None), database_cpu_s()
    t0, client0 = time.perf_counter(), time.thread_time()  # the event loop's thread: not the reaper's beside it
    answers = burst("127.0.0.1", port, requests)
    wall, client_cpu = time.perf_counter() - t0, time.thread_time() - client0
    server1, database1 = (server_cpu_s(server_pid) if server_pid else None), database_cpu_s()
    latencies = [a.seconds for a in answers]
    errors = [a for a in answers if not 200 <= a.status < 300]
    return {"requests": n, "errors": len(errors),
            "error_samples": [f"{a.status} {a.body[:120]!r}" for a in errors[:3]],
            "wall_s": round(wall, 3), "requests_per_s": round(n / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "client": "asyncio, one connection per request",
            "client_cpu_ms_per_request": round(1000 * client_cpu / n, 2),
            "server_cpu_ms_per_request": _per_request_ms(server0, server1, n),
            "database_cpu_ms_per_request": _per_request_ms(database0, database1, n),
            "results": [(a.status, a.body, a.seconds) for a in answers]}


def run(n_audits: int, n_reads: int, deadline_s: float) -> dict:
    import redis

    from db.migrate import upgrade
    from service.commands import create_token, run_reaper, spawn_worker, stop_process
    from tests.service.conftest import fresh_postgres_schema
    from tests.service.faults import TINY_CONFUSION, tiny_bundle
    from tests.service.servers import free_port, wait_until
    from tests.service.stack import restore_environ
    from workers.settings import load_settings

    pg, broker = os.environ.get("QUIRKSCOPE_TEST_DATABASE_URL"), os.environ.get("QUIRKSCOPE_TEST_REDIS_URL")
    if not (pg and broker):
        raise SystemExit("needs QUIRKSCOPE_TEST_DATABASE_URL and QUIRKSCOPE_TEST_REDIS_URL "
                         "(tests/service/start_servers.sh)")
    redis.Redis.from_url(broker).flushdb()
    home = Path(tempfile.mkdtemp(prefix="quirkscope-load-"))
    port = free_port()
    env = {"QUIRKSCOPE_HOME": str(home), "QUIRKSCOPE_DATABASE_URL": fresh_postgres_schema(pg),
           "QUIRKSCOPE_BROKER_URL": broker, "QUIRKSCOPE_RESULT_BACKEND": broker,
           "QUIRKSCOPE_ARTIFACTS_URL": f"file://{home / 'artifacts'}", "QUIRKSCOPE_SECRET_KEY": "load",
           "QUIRKSCOPE_HEARTBEAT_S": "1", "QUIRKSCOPE_STALE_AFTER_S": "60", "QUIRKSCOPE_REAPER_INTERVAL_S": "5",
           "QUIRKSCOPE_BIND": f"127.0.0.1:{port}", "QUIRKSCOPE_WEB_WORKERS": "2", "QUIRKSCOPE_WEB_THREADS": "8",
           "QUIRKSCOPE_ACCESS_LOG": "off",
           "PYTHONPATH": str(REPO)}
    saved_env, saved_cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
    os.environ.update(env)
    settings = load_settings()
    upgrade(settings.database_url)
    token = create_token("load", "submit,read,review", settings)
    base = f"http://127.0.0.1:{port}/api/v1"
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        log = open(home / "gunicorn.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "gunicorn",
                                       "-c", str(REPO / "deploy" / "gunicorn.conf.py"), "service.app:create_app()"],
                                      cwd=REPO, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT))
        os.chdir(REPO)
        procs += [spawn_worker([q], log_path=str(home / f"worker-{q}.log")) for q in ("gpu", "cpu")]
        wait_until(lambda: http("GET", base + "/health", token)[0] == 200, 60, "gunicorn")
        threading.Thread(target=run_reaper, args=(stop,), daemon=True).start()

        boundary = uuid.uuid4().hex
        upload = (f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; filename="m.zip"\r\n\r\n'.encode()
                  + tiny_bundle() + f"\r\n--{boundary}--\r\n".encode())
        status, body, _ = http("POST", base + "/models", token, upload, f"multipart/form-data; boundary={boundary}")
        assert status == 201, body
        model = json.loads(body)["id"]
        submit_body = json.dumps({"model_id": model, "confusion": TINY_CONFUSION, "options": LOAD_OPTIONS}).encode()

        host = f"127.0.0.1:{port}"
        submit = build_request("POST", host, "/api/v1/audits", {"Authorization": f"Bearer {token}",
                                                                "Content-Type": "application/json"}, submit_body)
        submissions = measured_burst(port, [submit] * n_audits, procs[0].pid)
        ids = [json.loads(b)["id"] for s, b, _ in submissions.pop("results") if s == 202]
        t0 = time.perf_counter()
        finished: dict[int, str] = {}
        reasons: dict[str, int] = {}
        while len(finished) < len(ids) and time.perf_counter() - t0 < deadline_s:
            for audit in ids:
                if audit not in finished:
                    s, b, _ = http("GET", f"{base}/audits/{audit}", token)
                    if s == 200 and json.loads(b)["status"] in ("done", "failed", "cancelled"):
                        finished[audit] = json.loads(b)["status"]
                        if finished[audit] != "done":
                            reason = str(json.loads(b).get("error") or "no reason given")[:200]
                            reasons[reason] = reasons.get(reason, 0) + 1
            time.sleep(0.5)
        processing_s = time.perf_counter() - t0
        done = [a for a, s in finished.items() if s == "done"]
        target = done[0] if done else ids[0]
        read = build_request("GET", host, f"/api/v1/audits/{target}/pairs", {"Authorization": f"Bearer {token}"})
        reads = measured_burst(port, [read] * n_reads, procs[0].pid)
        reads.pop("results")
        return {"submissions": submissions, "reads": reads,
                "audits": {"submitted": len(ids), "done": len(done),
                           "failed": sum(1 for s in finished.values() if s == "failed"),
                           "unfinished": len(ids) - len(finished), "processing_s": round(processing_s, 1),
                           "failure_reasons": reasons,
                           "audits_per_min": round(60 * len(finished) / processing_s, 1) if processing_s else None}}
    finally:
        stop.set()
        for proc in procs:
            stop_process(proc)
        os.chdir(saved_cwd)
        restore_environ(saved_env)


def print_figures(figures: dict) -> None:
    print(f"{'phase':<28}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, key in (("audit submissions", "submissions"), ("report reads (/pairs)", "reads")):
        f = figures[key]
        print(f"{name:<28}{f['requests']:>9}{f['errors']:>8}{f['requests_per_s']:>9}{f['p50_ms']:>9}{f['p99_ms']:>9}")
        print(f"  CPU per request: client {f.get('client_cpu_ms_per_request')} ms, gunicorn "
              f"{f.get('server_cpu_ms_per_request')} ms, postgres {f.get('database_cpu_ms_per_request')} ms")
        for sample in f["error_samples"]:
            print(f"  error: {sample}")
    a = figures["audits"]
    for reason, count in a.get("failure_reasons", {}).items():
        print(f"  failed ({count}): {reason}")
    print(f"audits: {a['submitted']} submitted, {a['done']} done, {a['failed']} failed, {a['unfinished']} unfinished "
          f"after {a['processing_s']} s ({a['audits_per_min']} audits/min)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audits", type=int, default=50)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--deadline-s", type=float, default=600)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = run(args.audits, args.reads, args.deadline_s)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
