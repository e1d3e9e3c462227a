"""The chunk size of an audit's visualisation: from the GPU's memory and the model's measured memory per
sample (the newest measurement of a chunk of the same model), else the settings' chunk size."""
from __future__ import annotations

import datetime as dt

from db.models import Audit, ModelBundle, Project, WorkItem
from workers.tasks.chunking import chunk_size_for_memory, planned_chunk_size

GiB = 1024 ** 3
MiB = 1024 ** 2


def test_chunk_size_is_what_fits_in_the_memory_budget_after_the_weights() -> None:
    # 80 GiB * 0.8 = 64 GiB, minus 4 GiB of weights = 60 GiB; at 100 MiB a sample: 614 samples
    assert chunk_size_for_memory(100 * MiB, 80 * GiB, reserved_bytes=4 * GiB, fallback=64) == 614
    assert chunk_size_for_memory(100 * MiB, 40 * GiB, reserved_bytes=4 * GiB, fallback=64) == 286
    assert chunk_size_for_memory(100 * MiB, 80 * GiB, budget_fraction=0.5, fallback=64) == 409


def test_chunk_size_falls_back_to_the_setting_without_a_gpu_measurement() -> None:
    assert chunk_size_for_memory(None, None, fallback=64) == 64
    assert chunk_size_for_memory(100 * MiB, None, fallback=16) == 16
    assert chunk_size_for_memory(0, 80 * GiB, fallback=16) == 16


def test_chunk_size_is_at_least_one_and_at_most_the_cap() -> None:
    assert chunk_size_for_memory(50 * GiB, 40 * GiB, fallback=64) == 1
    assert chunk_size_for_memory(1024, 80 * GiB, fallback=64) == 4096
    assert chunk_size_for_memory(1024, 80 * GiB, fallback=64, maximum=100) == 100


def _model(session, sha: str) -> ModelBundle:  # type: ignore[no-untyped-def]
    project = session.query(Project).filter_by(name="p").one_or_none() or Project(name="p")
    session.add(project)
    session.flush()
    model = ModelBundle(project_id=project.id, sha256=sha * 64, name="m", version=sha, format="onnx",
                        classes=["a", "b"], manifest={}, size_bytes=1, artifact_key="models/x.zip")
    session.add(model)
    session.flush()
    return model


def _audit(session, model: ModelBundle, measured: list[tuple[int, dict]]) -> Audit:  # type: ignore[no-untyped-def]
    audit = Audit(project_id=model.project_id, model_id=model.id, options={}, confusion={}, status="done")
    session.add(audit)
    session.flush()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    session.add_all([WorkItem(audit_id=audit.id, kind="visualise", key=i, status="done", payload=payload,
                              finished_at=t0 + dt.timedelta(minutes=minute))
                     for i, (minute, payload) in enumerate(measured)])
    session.commit()
    return audit


def test_planned_chunk_size_uses_the_newest_measurement_of_the_same_model(db_session) -> None:
    model, other = _model(db_session, "a"), _model(db_session, "b")
    old = {"bytes_per_sample": 400 * MiB, "gpu_memory_bytes": 80 * GiB, "reserved_bytes": 0}
    new = {"bytes_per_sample": 200 * MiB, "gpu_memory_bytes": 80 * GiB, "reserved_bytes": 0}
    _audit(db_session, model, [(1, old), (2, new), (3, {"device": "cpu"})])
    _audit(db_session, other, [(9, {"bytes_per_sample": MiB, "gpu_memory_bytes": 80 * GiB})])
    fresh = _audit(db_session, model, [])
    assert planned_chunk_size(db_session, fresh, fallback=64) == int(80 * GiB * 0.8 // (200 * MiB))
    unmeasured = _audit(db_session, _model(db_session, "c"), [(1, {"device": "cpu", "seconds": 1.0})])
    assert planned_chunk_size(db_session, unmeasured, fallback=12) == 12
