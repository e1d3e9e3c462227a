"""A worker process keeps its last models (LRU) and, with each, the factor-probe levers measured on it, which every
pair of every audit of that model on the worker shares (``factor_probes.LeverCache``); a model dropped from the
LRU drops its levers."""
from __future__ import annotations

import pytest

from workers.tasks import stages


@pytest.fixture(autouse=True)
def empty_caches():
    models, levers = dict(stages._MODELS), dict(stages._PROBE_LEVERS)
    stages._MODELS.clear()
    stages._PROBE_LEVERS.clear()
    yield
    stages._MODELS.clear()
    stages._MODELS.update(models)
    stages._PROBE_LEVERS.clear()
    stages._PROBE_LEVERS.update(levers)


def test_a_model_dropped_from_the_worker_drops_its_probe_levers() -> None:
    stages.remember_model("a", "model a", limit=2)
    stages._PROBE_LEVERS.setdefault("a", {})[("clip", "colour", 60, 0, 1)] = 1.5
    stages.remember_model("b", "model b", limit=2)
    stages._PROBE_LEVERS.setdefault("b", {})[("clip", "colour", 60, 0, 1)] = 0.5
    stages.remember_model("a", "model a", limit=2)              # a used again: b is now the oldest
    stages.remember_model("c", "model c", limit=2)
    assert list(stages._MODELS) == ["a", "c"]
    assert stages._PROBE_LEVERS == {"a": {("clip", "colour", 60, 0, 1): 1.5}}
    stages.remember_model("d", "model d", limit=0)              # a limit below 1 keeps one
    assert list(stages._MODELS) == ["d"] and stages._PROBE_LEVERS == {}
