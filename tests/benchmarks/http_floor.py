"""The floor under the read latency of ``tests/benchmarks/load.py`` on this machine: the same bursts (every
request on its own connection, all launched at once, ``http_burst``) against gunicorn with the API's own settings
(``deploy/gunicorn.conf.py``, 2 processes x 8 threads, access log off, as ``load.py`` runs it) serving apps that do
no work (``floor_apps``): a plain WSGI callable returning a fixed JSON body, and a one-route Flask app. Prints, per
app, requests/s, p50/p99 latency, errors and the CPU per request of this client and of gunicorn. Issue 14 asks for
a read p99 under 200 ms with 500 reads at once; what these apps reach is the best the stack can do here. Loopback
only, stops by itself.

    python tests/benchmarks/http_floor.py [--reads 500] [--bursts 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.http_burst import build_request  # noqa: E402  (after the path is set)
from tests.benchmarks.load import measured_burst  # noqa: E402
from tests.service.servers import free_port, port_open, wait_until  # noqa: E402

APPS = {"plain WSGI": "tests.benchmarks.floor_apps:bare", "Flask, one route": "tests.benchmarks.floor_apps:flask_app"}
PATH = "/api/v1/audits/1/report"


def serve(app: str, port: int, log: Path, workers: int = 2, threads: int = 8) -> subprocess.Popen:
    env = {**os.environ, "QUIRKSCOPE_BIND": f"127.0.0.1:{port}", "QUIRKSCOPE_WEB_WORKERS": str(workers),
           "QUIRKSCOPE_WEB_THREADS": str(threads), "QUIRKSCOPE_ACCESS_LOG": "off", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy" / "gunicorn.conf.py"), app],
                            cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def up() -> bool:       # the app is preloaded before gunicorn binds: an open port is a served app
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited serving {app} (log: {log})")
        return port_open(port)

    try:
        wait_until(up, 60, f"gunicorn serving {app}")
    except AssertionError as exc:
        proc.kill()
        raise SystemExit(f"{exc} (log: {log})") from None
    return proc


def measure(app: str, reads: int, bursts: int, log: Path, workers: int = 2, threads: int = 8) -> list[dict]:
    port = free_port()
    proc = serve(app, port, log, workers, threads)
    request = build_request("GET", f"127.0.0.1:{port}", PATH, {"Authorization": "Bearer x"})
    try:
        measured_burst(port, [request] * 50, proc.pid)          # warm both processes
        out = []
        for _ in range(bursts):
            figures = measured_burst(port, [request] * reads, proc.pid)
            figures.pop("results")
            out.append(figures)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes (load.py: 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per process (load.py: 8)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for name in ("reads", "bursts", "workers", "threads"):
        if getattr(args, name) < 1:
            parser.exit(2, f"http_floor: error [--{name}]: must be at least 1, got {getattr(args, name)}\n")
    log = Path(tempfile.mkdtemp(prefix="quirkscope-floor-")) / "gunicorn.log"
    results = {}
    print(f"{args.reads} reads at once, {args.bursts} bursts per app, gunicorn {args.workers} processes x "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}")
    for name, app in APPS.items():
        results[name] = measure(app, args.reads, args.bursts, log, args.workers, args.threads)
        for b in results[name]:
            print(f"{name:18s} {b['requests_per_s']:7.1f} req/s  p50 {b['p50_ms']:7.1f} ms  p99 {b['p99_ms']:7.1f} ms  "
                  f"errors {b['errors']}  CPU ms/request: client {b['client_cpu_ms_per_request']}, "
                  f"gunicorn {b['server_cpu_ms_per_request']}")
    if args.json:
        args.json.write_text(json.dumps({"reads": args.reads, "workers": args.workers, "threads": args.threads,
                                         "apps": results}, indent=2))


if __name__ == "__main__":
    main()
