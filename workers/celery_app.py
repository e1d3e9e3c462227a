"""The Celery app, built from the settings and a ``WorkerContext`` (database, artifact store), never from the
Flask app: tasks run with that context active; settings of DESIGN 5 (late acks, prefetch 1, soft < hard
time limits, Redis visibility timeout above the hard limit, queues ``gpu`` and ``cpu``).
``celery -A workers.celery_app worker`` finds ``app`` here; nothing here touches CUDA. A worker given
``QUIRKSCOPE_WORKER_METRICS_PORT`` serves its Prometheus metrics there (``workers.tasks.metrics``), on loopback
unless ``QUIRKSCOPE_WORKER_METRICS_ADDR`` says otherwise, behind ``QUIRKSCOPE_METRICS_TOKEN``
(``workers.tasks.metrics_http``)."""
from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from workers.runtime import WorkerContext, activate
from workers.settings import Settings, load_settings

QUEUES = ("gpu", "cpu")
TASK_MODULES = ("workers.tasks",)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings``."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_ignore_result": True,  # chord members opt in; the DB rows carry the real state
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,  # requeue when a child dies; the row's attempt count stops loops
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_time_limit": settings.hard_time_limit_s,
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 30.0,
        "task_default_queue": "cpu",
        "task_routes": {
            "workers.tasks.visualise_chunk": {"queue": "gpu"},
            "workers.tasks.evaluate_pair": {"queue": "gpu"},  # every model evaluation runs where the model is
            "workers.tasks.*": {"queue": "cpu"},
            "celery.*": {"queue": "cpu"},  # chord_unlock must reach a worker that is always there
        },
        "task_annotations": {"celery.chord_unlock": {"max_retries": 7 * 24 * 3600}},
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "include": list(TASK_MODULES) + [m.strip() for m in settings.task_modules.split(",") if m.strip()],
    }
    if settings.broker_url.startswith("redis"):
        vt = {"visibility_timeout": settings.visibility_timeout_s}
        conf["broker_transport_options"] = dict(vt)
        conf["result_backend_transport_options"] = dict(vt)
        conf["visibility_timeout"] = settings.visibility_timeout_s
    elif settings.broker_url.startswith("filesystem"):
        dirs = settings.broker_dirs
        conf["broker_transport"] = "workers.filesystem_broker:Transport"  # whole-message writes
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(dirs["queue"]), "data_folder_out": str(dirs["queue"]),
            "processed_folder": str(dirs["processed"]), "store_processed": False,
            "control_folder": str(dirs["control"]), "polling_interval": 0.25,
        }
    return conf


def create_celery_app(settings: Settings, context: WorkerContext | None = None, *,
                      null_pool: bool = False) -> Celery:
    """A Celery app for ``settings`` whose tasks run with ``context`` active (default: a new one from the
    settings; ``null_pool`` for forking workers). The app becomes the default one of this process."""
    context = context or WorkerContext.from_settings(settings, null_pool=null_pool)

    class ContextTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with activate(context):
                return self.run(*args, **kwargs)

    celery = Celery("quirkscope", task_cls=ContextTask)
    celery.config_from_object(celery_config(settings))
    celery.quirkscope_context = context  # type: ignore[attr-defined]
    celery.set_default()
    return celery


def create_worker_app() -> Celery:
    """Entry point of ``celery -A workers.celery_app worker``: settings from the environment, a fork-safe pool."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # torch.cuda.is_available must not poison fork
    settings = load_settings()
    if settings.worker_metrics_port:  # before any task module imports prometheus-client
        from workers.tasks.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(settings.home, f"worker-{settings.worker_metrics_port}-{os.getpid()}")
    return create_celery_app(settings, null_pool=True)


@worker_init.connect
def _serve_worker_metrics(**_: object) -> None:
    """The worker's main process serves the merged metrics of its children on ``worker_metrics_port`` at
    ``worker_metrics_addr`` (or logs why it will not: no token on a non-loopback address)."""
    from celery import current_app

    context = getattr(current_app, "quirkscope_context", None)
    port = context.settings.worker_metrics_port if context is not None else 0
    if port:
        from workers.tasks.metrics import serve_for

        serve_for(context.settings)


@worker_shutdown.connect
def _remove_worker_metrics(**_: object) -> None:
    from workers.tasks.metrics import remove_multiprocess_dir

    remove_multiprocess_dir()


@worker_process_shutdown.connect
def _forget_child_gauges(pid: int | None = None, **_: object) -> None:
    from workers.tasks.metrics import child_exited

    child_exited(pid or os.getpid())


@worker_process_init.connect
def _dispose_pools_after_fork(**_: object) -> None:
    from celery import current_app

    context = getattr(current_app, "quirkscope_context", None)
    if context is not None:
        context.database.dispose_after_fork()


def __getattr__(name: str) -> Any:
    # ``celery -A workers.celery_app`` looks up ``app``/``celery``; build it on first access only, so that
    # importing this module (as create_app does) has no side effects.
    if name in ("app", "celery"):
        global _worker_app
        try:
            return _worker_app
        except NameError:
            _worker_app = create_worker_app()
            return _worker_app
    raise AttributeError(name)
