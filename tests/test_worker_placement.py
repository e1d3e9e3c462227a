"""``quirkscope worker --gpus``: which GPUs, one ``celery worker`` per GPU with its own CUDA_VISIBLE_DEVICES,
queue ``gpu``, concurrency 1, prefetch 1 and metrics port; bad values exit 2 naming the field; the
supervisor stops the others when one worker exits."""
from __future__ import annotations

import sys

import pytest

from service.cli import main
from service.placement import WorkerLaunch, gpu_worker_launches, parse_gpus, resolve_gpus, supervise
from workers.engine.errors import InvalidInput


def test_all_gpus_are_the_visible_ones_or_every_device_the_driver_reports() -> None:
    assert resolve_gpus("all", visible=None, count=4) == ["0", "1", "2", "3"]
    assert resolve_gpus("all", visible="2,3", count=4) == ["2", "3"]
    assert resolve_gpus(parse_gpus("0,1"), visible=None, count=2) == ["0", "1"]
    assert resolve_gpus(parse_gpus("GPU-8f2c1e4a-1b2c"), visible=None, count=1) == ["GPU-8f2c1e4a-1b2c"]


def test_explicit_gpus_on_a_machine_without_one_run_as_given() -> None:
    assert resolve_gpus(parse_gpus("0,1"), visible=None, count=0) == ["0", "1"]


@pytest.mark.parametrize(("text", "visible", "count", "says"), [
    ("0,0", None, 2, "twice"), ("x", None, 2, "indices"), ("", None, 2, "indices"), ("2", None, 2, "0..1"),
    ("1", "0", 2, "CUDA_VISIBLE_DEVICES"), ("all", None, 0, "no GPU"), ("all", "", 4, "no GPU")])
def test_bad_gpu_lists_are_refused_naming_the_field(text: str, visible: str | None, count: int, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        resolve_gpus(parse_gpus(text), visible=visible, count=count)
    assert err.value.field == "gpus" and says in err.value.message


def test_one_gpu_queue_worker_per_gpu_with_its_device_and_metrics_port() -> None:
    launches = gpu_worker_launches(["0", "1"], metrics_port=9100, python="py")
    assert [(w.gpu, w.env["CUDA_VISIBLE_DEVICES"], w.env["QUIRKSCOPE_WORKER_METRICS_PORT"]) for w in launches] == \
        [("0", "0", "9100"), ("1", "1", "9101")]
    argv = launches[1].argv
    assert argv[:6] == ["py", "-m", "celery", "-A", "workers.celery_app", "worker"]
    flags = dict(zip(argv[6::2], argv[7::2]))
    assert flags["-Q"] == "gpu" and flags["-c"] == "1" and flags["--prefetch-multiplier"] == "1"
    assert flags["-P"] == "prefork" and flags["-n"] == "gpu1@%h"
    assert gpu_worker_launches(["0"])[0].env["QUIRKSCOPE_WORKER_METRICS_PORT"] == "0"


@pytest.mark.parametrize(("argv", "field"), [
    (["worker", "--gpus", "0,0"], "gpus"),
    (["worker", "--gpus", "all", "-Q", "cpu"], "queues"),
    (["worker", "--gpus", "0", "-c", "2"], "concurrency"),
])
def test_worker_command_exits_2_naming_the_field(argv: list[str], field: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"quirkscope: error [{field}]")


def test_supervisor_stops_the_other_workers_when_one_exits_and_returns_its_code() -> None:
    launches = [WorkerLaunch("0", [sys.executable, "-c", "import sys; sys.exit(3)"], {}),
                WorkerLaunch("1", [sys.executable, "-c", "import signal; signal.pause()"], {})]
    assert supervise(launches) == 3
