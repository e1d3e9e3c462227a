"""Worker placement: ``quirkscope worker --gpus all|0,1`` runs one Celery worker process per GPU, each seeing
only its GPU (``CUDA_VISIBLE_DEVICES``), on the ``gpu`` queue with concurrency 1 and prefetch 1, each with its
own metrics port; this process supervises them (a TERM or INT is passed on for a warm shutdown; when one
worker exits on its own the others are stopped too, so that the container or unit restarts as a whole)."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from workers.engine.errors import InvalidInput

log = logging.getLogger(__name__)
GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")  # an index or a GPU/MIG UUID, as CUDA_VISIBLE_DEVICES takes


def parse_gpus(text: str) -> str | list[str]:
    """``all`` or a comma-separated list of distinct GPU indices or UUIDs."""
    text = text.strip()
    if text == "all":
        return "all"
    ids = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in ids if not GPU_ID.match(g)]
    if not ids or bad:
        raise InvalidInput(f"--gpus takes 'all' or GPU indices/UUIDs separated by commas, got {text!r}", field="gpus")
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"--gpus names a GPU twice: {text!r}", field="gpus")
    return ids


def resolve_gpus(spec: str | list[str], *, visible: str | None, count: int) -> list[str]:
    """The GPUs to run workers on. ``visible``: this process's ``CUDA_VISIBLE_DEVICES`` (None when unset);
    ``count``: the GPUs the driver reports (0 on a machine without one, where explicit ids are taken as given
    and the workers run on the CPU)."""
    allowed = [g.strip() for g in visible.split(",") if g.strip()] if visible is not None else None
    if spec == "all":
        ids = allowed if allowed is not None else [str(i) for i in range(count)]
        if not ids:
            raise InvalidInput("--gpus all: no GPU is visible on this machine", field="gpus")
        return ids
    ids = list(spec)
    if allowed is not None:
        outside = [g for g in ids if g not in allowed]
        if outside:
            raise InvalidInput(f"GPU {outside[0]} is not in CUDA_VISIBLE_DEVICES={visible}", field="gpus")
    elif count:
        outside = [g for g in ids if g.isdigit() and int(g) >= count]
        if outside:
            raise InvalidInput(f"GPU {outside[0]} does not exist: this machine has {count} (0..{count - 1})",
                               field="gpus")
    return ids


@dataclass(frozen=True)
class WorkerLaunch:
    """One worker process: its command line and the environment it adds."""

    gpu: str
    argv: list[str]
    env: dict[str, str]


def gpu_worker_launches(gpus: Sequence[str], *, metrics_port: int = 0, loglevel: str = "INFO",
                        python: str = sys.executable) -> list[WorkerLaunch]:
    """One ``celery worker`` per GPU: queue ``gpu``, prefork with one child, prefetch 1, node ``gpu<id>@host``,
    ``CUDA_VISIBLE_DEVICES=<id>``, metrics on ``metrics_port + i`` (none when 0)."""
    launches = []
    for i, gpu in enumerate(gpus):
        argv = [python, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "gpu", "-P", "prefork",
                "-c", "1", "--prefetch-multiplier", "1", "-n", f"gpu{gpu}@%h", "--loglevel", loglevel, "-E"]
        env = {"CUDA_VISIBLE_DEVICES": gpu, "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
               "QUIRKSCOPE_WORKER_METRICS_PORT": str(metrics_port + i if metrics_port else 0)}
        launches.append(WorkerLaunch(gpu, argv, env))
    return launches


def visible_gpu_count() -> int:
    """GPUs the driver reports, read through NVML so that this (forking) process never initialises CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no driver, no NVML: no GPU
        return 0


def supervise(launches: Sequence[WorkerLaunch], base_env: Mapping[str, str] | None = None) -> int:
    """Start every launch, pass TERM/INT on to them, and return when all have exited: 0 after a requested
    stop, else the exit code of the worker that stopped on its own (the others are stopped with it)."""
    env = {k: v for k, v in (base_env if base_env is not None else os.environ).items()
           if k != "PROMETHEUS_MULTIPROC_DIR"}  # each worker gets its own metrics folder
    procs = {}
    for launch in launches:
        proc = subprocess.Popen(launch.argv, env={**env, **launch.env})
        procs[proc.pid] = proc
        log.info("worker for GPU %s: pid %d", launch.gpu, proc.pid)
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM if signum in (signal.SIGTERM, signal.SIGINT) else signum)

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    first_failure = 0
    try:
        while any(p.returncode is None for p in procs.values()):
            pid, status = os.waitpid(-1, 0)
            proc = procs.get(pid)
            if proc is None:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("worker pid %d exited with %s; stopping the others", pid, proc.returncode)
                first_failure = proc.returncode or 1
                stop_all()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return first_failure
