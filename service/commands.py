"""What the ``quirkscope`` CLI runs for the service: create a token, migrate, serve the API (with, in
embedded mode, the worker processes and the reaper beside it), run a worker, run the reaper."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Sequence

from workers.settings import Settings, load_settings

log = logging.getLogger(__name__)
WORKER_QUEUES = ("gpu", "cpu")


def migrate(settings: Settings | None = None) -> None:
    """Upgrade the database to the newest schema (idempotent)."""
    from db.migrate import upgrade

    settings = settings or load_settings()
    if settings.database_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def create_token(project: str, scopes: str | Sequence[str], settings: Settings | None = None) -> str:
    """Create a token for ``project`` (created if new) with ``scopes``; return it. Only its hash is kept,
    so the caller must show it now: it cannot be recovered later."""
    from db.session import BoundDatabase
    from service.auth import issue_token

    settings = settings or load_settings()
    migrate(settings)
    bound = BoundDatabase(settings.database_url, null_pool=True)
    try:
        with bound.sessionmaker() as session:
            return issue_token(session, project, list(scopes) if not isinstance(scopes, str) else scopes)
    finally:
        bound.engine.dispose()


def worker_argv(queues: Sequence[str], *, concurrency: int = 1, pool: str = "prefork",
                loglevel: str = "INFO", name: str | None = None) -> list[str]:
    """Arguments of ``celery worker`` for ``queues`` (DESIGN 5: prefork, one process per GPU)."""
    unknown = sorted(set(queues) - set(WORKER_QUEUES))
    if unknown or not queues:
        raise ValueError(f"queues must be a non-empty subset of {list(WORKER_QUEUES)}, got {list(queues)}")
    node = name or f"{'-'.join(queues)}@%h"
    return ["worker", "-Q", ",".join(queues), "-P", pool, "-c", str(concurrency), "-n", node,
            "--loglevel", loglevel, "-E"]


def run_worker(queues: Sequence[str], *, concurrency: int = 1, pool: str = "prefork",
               loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process for ``queues`` (``gpu``, ``cpu`` or both). Blocks."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    settings = load_settings()
    if settings.database_url.startswith("sqlite"):
        migrate(settings)
    from workers.celery_app import create_worker_app

    celery = create_worker_app()
    celery.worker_main(worker_argv(queues, concurrency=concurrency, pool=pool, loglevel=loglevel))


def run_gpu_workers(gpus: str, *, metrics_port: int = 0, loglevel: str = "INFO") -> int:
    """``quirkscope worker --gpus all|0,1``: one ``gpu``-queue worker process per GPU, supervised here until
    they stop (``service.placement``). Returns the exit code."""
    from service.placement import gpu_worker_launches, parse_gpus, resolve_gpus, supervise, visible_gpu_count

    spec = parse_gpus(gpus)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = visible_gpu_count() if visible is None else 0
    ids = resolve_gpus(spec, visible=visible, count=count)
    if visible is None and count == 0:
        log.warning("no CUDA device visible: the gpu-queue workers for %s will run on the CPU", ",".join(ids))
    settings = load_settings()
    if settings.database_url.startswith("sqlite"):
        migrate(settings)
    log.info("starting %d gpu-queue workers on GPUs %s", len(ids), ",".join(ids))
    return supervise(gpu_worker_launches(ids, metrics_port=metrics_port, loglevel=loglevel))


def spawn_worker(queues: Sequence[str], *, env: dict[str, str] | None = None,
                 log_path: str | None = None) -> subprocess.Popen:
    """Start ``celery worker`` for ``queues`` as a separate process (embedded mode, tests)."""
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery_app", *worker_argv(queues)]
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(cmd, env={**os.environ, **(env or {}), "PYTORCH_NVML_BASED_CUDA_CHECK": "1"},
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Warm shutdown (TERM), then KILL the process group if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def reap_once(app=None) -> dict:  # type: ignore[no-untyped-def]
    """One pass of the reaper over the database of ``app`` (default: a new app from the environment)."""
    from service.app import create_app
    from workers.tasks.reaper import reap_once as reap

    app = app or create_app()
    conf = app.extensions["quirkscope_settings"]
    with app.extensions["quirkscope_db"].sessionmaker() as session:
        report = reap(session, app.extensions["celery"], max_attempts=conf.max_attempts,
                      stale_after_s=conf.stale_after_s)
    return report.__dict__


def run_reaper(stop: threading.Event | None = None, app=None) -> None:  # type: ignore[no-untyped-def]
    """Run the reaper every ``QUIRKSCOPE_REAPER_INTERVAL_S`` until ``stop`` is set (or forever)."""
    from service.app import create_app

    app = app or create_app()
    stop = stop or threading.Event()
    interval = app.extensions["quirkscope_settings"].reaper_interval_s
    while not stop.is_set():
        try:
            result = reap_once(app)
            if any(result.values()):
                log.info("reaper: %s", result)
        except Exception:  # noqa: BLE001 - keep reaping; the next pass may succeed
            log.exception("reaper pass failed")
        stop.wait(interval)


def serve(embedded: bool = False, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API and pages. ``embedded``: SQLite, local artifacts and the ``filesystem://`` broker
    under ``QUIRKSCOPE_HOME``, plus a ``gpu`` and a ``cpu`` worker process and the reaper, all stopped
    with the server. Otherwise only the web process (production runs gunicorn, see deploy/)."""
    from werkzeug.serving import run_simple

    from service.app import create_app

    settings = load_settings()
    if embedded and not settings.embedded:
        raise SystemExit("--embedded needs the filesystem broker: unset QUIRKSCOPE_BROKER_URL")
    migrate(settings)
    app = create_app(settings=settings)
    workers: list[subprocess.Popen] = []
    stop = threading.Event()
    if embedded:
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for queue in WORKER_QUEUES:
            workers.append(spawn_worker([queue], log_path=str(logs / f"worker-{queue}.log")))
        threading.Thread(target=run_reaper, args=(stop, app), name="reaper", daemon=True).start()
        log.info("embedded mode: home %s, workers %s", settings.home, [w.pid for w in workers])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the workers too (the finally below)
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)
    finally:
        stop.set()
        for proc in workers:  # warm shutdown of all at once, then wait for each
            if proc.poll() is None:
                proc.terminate()
        for proc in workers:
            stop_process(proc)


if __name__ == "__main__":  # pragma: no cover - convenience: python -m service.commands token alpha read
    logging.basicConfig(level=logging.INFO)
    if sys.argv[1:2] == ["token"]:
        print(create_token(sys.argv[2], sys.argv[3]))
    elif sys.argv[1:2] == ["worker"]:
        run_worker(sys.argv[2].split(","))
    elif sys.argv[1:2] == ["serve"]:
        serve(embedded="--embedded" in sys.argv)
