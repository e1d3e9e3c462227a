"""How many objectives go into one ``visualise`` work item (a chunk that one GPU worker takes): as many as
fit in the GPU's memory at the model's measured memory per sample, so a worker runs its chunk as one batch
and an audit still splits into chunks that several GPU workers take in parallel. The memory per sample is
measured by the GPU worker while it runs a chunk (``GpuMemoryProbe``) and kept on that work item; the next
audit of the same model is planned from it. With no measurement (a new model, or workers on the CPU) the
settings' ``chunk_size`` is used."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Audit, WorkItem

MAX_CHUNK = 4096  # the engine's own cap on rows per batch
MEASUREMENTS_SEARCHED = 50


def chunk_size_for_memory(bytes_per_sample: float | None, gpu_memory_bytes: int | None, *, fallback: int,
                          reserved_bytes: int = 0, budget_fraction: float = 0.8, maximum: int = MAX_CHUNK) -> int:
    """Objectives per chunk: ``(gpu_memory * budget_fraction - reserved) / bytes_per_sample``, at least 1 and at
    most ``maximum``; ``fallback`` when either measurement is missing (CPU workers, nothing measured yet).
    ``reserved_bytes``: what the worker holds besides the batch (the model's weights)."""
    if not bytes_per_sample or bytes_per_sample <= 0 or not gpu_memory_bytes or gpu_memory_bytes <= 0:
        return max(1, fallback)
    usable = gpu_memory_bytes * budget_fraction - max(reserved_bytes, 0)
    return int(max(1, min(maximum, usable // bytes_per_sample)))


@dataclass
class GpuMemoryProbe:
    """Peak CUDA memory of the code run after ``gpu_memory_probe()``, per sample; inert on the CPU."""

    device: Any = None
    baseline: int = 0

    def measure(self, samples: int) -> dict[str, int]:
        """``bytes_per_sample``, ``gpu_memory_bytes`` and ``reserved_bytes`` of the run, or ``{}`` on the CPU."""
        if self.device is None or samples < 1:
            return {}
        import torch

        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        total = torch.cuda.get_device_properties(self.device).total_memory
        return {"bytes_per_sample": int(max(peak - self.baseline, 1) // samples), "gpu_memory_bytes": int(total),
                "reserved_bytes": int(self.baseline)}


def gpu_memory_probe() -> GpuMemoryProbe:
    """Start measuring: reset CUDA's peak-memory counter of the current device (nothing on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return GpuMemoryProbe()
    device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return GpuMemoryProbe(device, torch.cuda.memory_allocated(device))


def planned_chunk_size(session: Session, audit: Audit, fallback: int) -> int:
    """Chunk size of ``audit``: from the newest memory measurement of a chunk of the same model (any audit of
    it), else ``fallback``."""
    rows = session.scalars(select(WorkItem).join(Audit, Audit.id == WorkItem.audit_id)
                           .where(Audit.model_id == audit.model_id, WorkItem.kind == "visualise",
                                  WorkItem.status == "done")
                           .order_by(WorkItem.finished_at.desc()).limit(MEASUREMENTS_SEARCHED))
    for item in rows:
        payload = item.payload or {}
        if payload.get("bytes_per_sample") and payload.get("gpu_memory_bytes"):
            return chunk_size_for_memory(payload["bytes_per_sample"], payload["gpu_memory_bytes"],
                                         reserved_bytes=int(payload.get("reserved_bytes", 0)), fallback=fallback)
    return max(1, fallback)
