"""Prometheus metrics of a worker: task durations by stage and outcome, failures and retries by stage, and
sample-iterations (objectives x optimisation steps) per GPU, as a counter and as the rate of the last chunk.
A Celery prefork worker records them in its child processes, so they use prometheus-client's multiprocess
mode (one folder of memory-mapped files per worker, ``PROMETHEUS_MULTIPROC_DIR``, which must be set before
prometheus-client is imported: ``prepare_multiprocess_dir``), and the worker's main process serves the
merged values on its metrics port (``serve``, over ``workers.tasks.metrics_http``: loopback unless an
address is set, the bearer ``QUIRKSCOPE_METRICS_TOKEN`` when set)."""
from __future__ import annotations

import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from workers.settings import Settings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., None])
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_owned_dir: Path | None = None
DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def prepare_multiprocess_dir(home: Path, node: str) -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder of this worker (kept if already set) and return it.
    Call it before anything imports prometheus-client."""
    global _owned_dir
    given = os.environ.get(MULTIPROC_ENV)
    folder = Path(given or home / "metrics" / node)
    if folder.exists():
        shutil.rmtree(folder)  # values of a previous run of this worker are not this run's
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    _owned_dir = None if given else folder
    return folder


def remove_multiprocess_dir() -> None:
    """At the worker's shutdown: remove the metrics folder ``prepare_multiprocess_dir`` made (not a given one)."""
    if _owned_dir is not None:
        shutil.rmtree(_owned_dir, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "duration": Histogram("quirkscope_task_duration_seconds", "Wall time of a task's work item, by stage",
                              ["stage", "outcome"], buckets=DURATION_BUCKETS),
        "failures": Counter("quirkscope_task_failures_total", "Work items that failed (after their retries)",
                            ["stage"]),
        "retries": Counter("quirkscope_task_retries_total", "Work items released for a retry after a transient error",
                           ["stage"]),
        "iterations": Counter("quirkscope_sample_iterations_total",
                              "Objectives times optimisation steps run, per GPU slot", ["gpu", "device"]),
        "rate": Gauge("quirkscope_sample_iterations_per_second", "Sample-iterations per second of the last chunk",
                      ["gpu", "device"], multiprocess_mode="mostrecent"),
    }


def never_fails(fn: F) -> F:
    """Recording a metric must not fail the task whose work is already stored."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - metrics are best effort
            log.warning("could not record metric %s", fn.__name__, exc_info=True)

    return wrapper  # type: ignore[return-value]


def gpu_slot() -> str:
    """The GPU this worker process was given (``CUDA_VISIBLE_DEVICES``), ``""`` when none was."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@never_fails
def task_finished(stage: str, outcome: str, seconds: float) -> None:
    m = _metrics()
    m["duration"].labels(stage=stage, outcome=outcome).observe(seconds)
    if outcome == "failed":
        m["failures"].labels(stage=stage).inc()


@never_fails
def task_retried(stage: str) -> None:
    _metrics()["retries"].labels(stage=stage).inc()


@never_fails
def visualisation_finished(objectives: int, steps: int, seconds: float, device: str) -> None:
    m = _metrics()
    labels = {"gpu": gpu_slot(), "device": device}
    m["iterations"].labels(**labels).inc(objectives * steps)
    if seconds > 0:
        m["rate"].labels(**labels).set(objectives * steps / seconds)


def registry() -> Any:
    """The registry to expose: every process's values merged in multiprocess mode, else this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    merged = CollectorRegistry()
    MultiProcessCollector(merged)
    return merged


def serve(port: int, addr: str = "127.0.0.1", *, token: str = "", public: bool = False) -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a background thread of this process, under the policy of
    ``workers.tasks.metrics_http`` (``token``: the bearer token it wants; ``public``: none); returns the server,
    or None when that policy refuses the address."""
    from prometheus_client import make_wsgi_app

    from workers.tasks.metrics_http import start

    return start(make_wsgi_app(registry()), port, addr, token=token, public=public)


def serve_for(settings: Settings) -> Any:
    """``serve`` on the worker metrics port and address of ``settings``, with its metrics token and public flag."""
    return serve(settings.worker_metrics_port, settings.worker_metrics_addr, token=settings.metrics_token,
                 public=settings.metrics_public)


def child_exited(pid: int) -> None:
    """Drop the live-gauge files of a dead child process (counters and histograms keep their totals)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
