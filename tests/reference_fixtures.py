"""Session-wide fixtures built from the generated reference benchmark: a trained tiny two-stream model (seed 0)
and its visualisations. Imported by tests/conftest.py so every test module can ask for them."""
from __future__ import annotations

import numpy as np
import pytest

from workers.engine.config import VisualizationConfig
from workers.engine.reference import data
from workers.engine.reference.train import TrainedReference, train_reference
from workers.engine.visualize import UnitRequest, UnitResult, visualize

PLANTED_CLASSES = [data.WATERMARK.class_name, data.WATERMARK.partner, data.FLICKER.class_name, data.FLICKER.partner]
TEST_STEPS = 128
TEST_SEEDS = 2


@pytest.fixture(scope="session")
def reference() -> TrainedReference:
    return train_reference(0)


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
