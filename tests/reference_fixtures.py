"""Session-wide fixtures built from the generated reference benchmark: a trained tiny two-stream model (seed 0)
and its visualisations. Imported by tests/conftest.py so every test module can ask for them."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from workers.engine.config import VisualizationConfig
from workers.engine.reference import data
from workers.engine.reference.train import TrainedReference, train_reference
from workers.engine.visualize import UnitRequest, UnitResult, visualize

PLANTED_CLASSES = [data.WATERMARK.class_name, data.WATERMARK.partner, data.FLICKER.class_name, data.FLICKER.partner]
TEST_STEPS = 128
TEST_SEEDS = 2


@functools.cache
def reference_model() -> TrainedReference:
    """Trained once per test session, whichever fixture asks first (tests/service has its own ``reference``)."""
    return train_reference(0)


@pytest.fixture(scope="session")
def reference() -> TrainedReference:
    return reference_model()


@pytest.fixture(scope="session")
def reference_visualizations(reference: TrainedReference) -> list[UnitResult]:
    """The four classes of the planted pairs x 3 kappa levels x 2 seeds, in one batched run."""
    config = VisualizationConfig(steps=TEST_STEPS)
    names = list(data.CLASS_NAMES)
    requests = [UnitRequest(target=names.index(c), kappa=k, seed=s)
                for c in PLANTED_CLASSES for k in config.kappas(3) for s in range(TEST_SEEDS)]
    return visualize(reference.model, reference.manifest.inputs, requests, config, device="cpu")


def results_of(results: list[UnitResult], class_name: str) -> list[UnitResult]:
    index = list(data.CLASS_NAMES).index(class_name)
    return [r for r in results if r.request.target == index]


def pixels(appearance: np.ndarray) -> np.ndarray:
    """Model-space RGB (3, T, H, W) -> pixels in [0, 1] (unclipped)."""
    std = np.array(data.RGB_STD).reshape(3, 1, 1, 1)
    mean = np.array(data.RGB_MEAN).reshape(3, 1, 1, 1)
    return appearance * std + mean


# The second release of the gate tests and the README walkthrough: the reference model trained again with one more
# shortcut planted (``quirkscope demo-data --plant``).
EXTRA_PLANT = "watermark:BoxRiseUp"
GATE_AUDIT = ["--steps", "32", "--levels", "1", "--seeds", "1", "--top-k", "3"]


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two releases of one model as bundles + confusion files: ``v1`` (the reference model) and ``v2`` (the same
    data and seed with ``EXTRA_PLANT`` planted too), with the extra shortcut's planted truth."""
    from workers.engine.reference.train import write_reference

    root = tmp_path_factory.mktemp("releases")
    extra = data.extra_shortcut(EXTRA_PLANT)
    v1 = write_reference(reference_model(), root / "v1")
    v2 = write_reference(train_reference(0, extra=(extra,), version="v2"), root / "v2")
    return {"v1": v1, "v2": v2, "extra": extra}
