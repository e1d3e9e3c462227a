"""Trains the tiny two-stream reference net on generated clips and writes what an ML team would upload: a model
bundle (DESIGN 3.1) and the test-split confusion matrix (DESIGN 3.2). Deterministic for a seed on the CPU."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from workers.engine.manifest import Manifest
from workers.engine.reference import data
from workers.engine.reference.model import TinyTwoStream

log = logging.getLogger(__name__)

ARCHITECTURE = "quirkscope.tiny_twostream"


@dataclass
class TrainedReference:
    model: nn.Module
    manifest: Manifest
    confusion: dict              # {"classes": [...], "matrix": [[...]]}
    test_accuracy: float
    seconds: float


def reference_manifest(head: str = "flatten", seed: int = 0, version: str | None = None) -> Manifest:
    return Manifest(
        name=f"quirkscope-reference-{head}", version=version or f"seed{seed}", classes=list(data.CLASS_NAMES),
        format="safetensors", architecture=ARCHITECTURE,
        architecture_kwargs={"frames": data.FRAMES, "size": data.SIZE, "head": head},
        inputs=[
            {"name": "appearance", "modality": "rgb", "layout": "NCTHW",
             "shape": [3, data.FRAMES, data.SIZE, data.SIZE], "mean": data.RGB_MEAN, "std": data.RGB_STD},
            {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, data.FRAMES, data.SIZE, data.SIZE],
             "scale": data.FLOW_SCALE},
        ],
    )


def fit_classifier(model: nn.Module, inputs: list[torch.Tensor], labels: torch.Tensor, *, seed: int, epochs: int,
                   batch_size: int, lr: float) -> None:
    """Train ``model`` in place on ``inputs`` (tensors whose first axis is the sample, passed positionally) with
    AdamW + one-cycle schedule and cross-entropy; shuffles with a generator seeded by ``seed``. Leaves the model in
    eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(*(x[idx] for x in inputs)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d loss %.4f", epoch, total / len(labels))
    model.eval()


def predict_labels(model: nn.Module, inputs: list[torch.Tensor], batch_size: int = 256) -> np.ndarray:
    """Arg-max class of every sample of ``inputs`` (positional model inputs), in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(*(x[i:i + batch_size] for x in inputs)).argmax(1)
                          for i in range(0, len(inputs[0]), batch_size)]).numpy()


def train_reference(seed: int = 0, *, head: str = "flatten", per_class_train: int = 160, per_class_test: int = 60,
                    epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
                    extra: tuple[data.PlantedShortcut, ...] = (), version: str | None = None) -> TrainedReference:
    """Generate data (with the ``extra`` shortcuts planted besides ``data.PLANTED``), train, evaluate on the clean
    test split. ``version`` is the manifest's (default ``seed<seed>``)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    train = data.generate_clips(per_class_train, "train", seed, extra=extra)
    test = data.generate_clips(per_class_test, "test", seed)
    model = TinyTwoStream(num_classes=len(data.CLASSES), frames=data.FRAMES, size=data.SIZE, head=head)
    fit_classifier(model, [torch.from_numpy(a) for a in data.to_model_inputs(train)], torch.from_numpy(train.labels),
                   seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)
    y_true = test.labels
    y_pred = predict_labels(model, [torch.from_numpy(a) for a in data.to_model_inputs(test)])
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(len(data.CLASSES)))
    return TrainedReference(
        model=model, manifest=reference_manifest(head, seed, version),
        confusion={"classes": list(data.CLASS_NAMES), "matrix": matrix.tolist()},
        test_accuracy=float((y_true == y_pred).mean()), seconds=time.perf_counter() - t0,
    )


def write_reference(trained: TrainedReference, out_dir: Path, *, fmt: str = "safetensors") -> tuple[Path, Path]:
    """Write ``model.zip`` (the bundle) and ``confusion.json`` into ``out_dir``; return both paths."""
    from workers.engine.bundle import write_bundle

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = trained.manifest.model_copy(update={"format": fmt})
    bundle = write_bundle(trained.model, manifest, out_dir / "model.zip", fmt=fmt)
    confusion = out_dir / "confusion.json"
    confusion.write_text(json.dumps(trained.confusion))
    return bundle, confusion
