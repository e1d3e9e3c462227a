"""The four stage tasks, each a thin wrapper around one step of ``workers.audit.pipeline``:
``start_audit`` (plan), ``visualise_chunk`` (gpu), ``score_pair``, ``render_report``. They load rows and
artifacts, call the pipeline, and write rows and artifacts keyed by what they compute (audit, class,
stream, level, seed; audit, pair), so a re-run overwrites instead of duplicating. torch and the pipeline
are imported inside the task bodies only."""
from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import Audit, ClassPair, Flag, ModelBundle, PairScore, Project, Visualization, WorkItem, utcnow
from workers import runtime
from workers.tasks import metrics
from workers.tasks.chunking import gpu_memory_probe, planned_chunk_size
from workers.tasks.flow import TASK_OPTIONS, _after_reaped, advance_audit, pair_by_rank
from workers.tasks.runner import end_snapshot, run_item

if TYPE_CHECKING:
    from workers.audit.analysis import AuditLeanings
    from workers.audit.evidence import PairEvidence

log = logging.getLogger(__name__)
CHORD_MEMBER = {**TASK_OPTIONS, "ignore_result": False}
_MODELS: "OrderedDict[str, Any]" = OrderedDict()  # per worker process: bundle sha256 -> LoadedModel
# per worker process: bundle sha256 -> the factor-probe levers measured on it (``factor_probes.LeverCache``), which
# every pair of every audit of that model on this worker shares; dropped with the model
_PROBE_LEVERS: dict[str, dict] = {}


# ----------------------------------------------------------------------------------------------- helpers

def load_model(session: Session, audit: Audit) -> Any:
    """The audit's model, loaded once per worker process (LRU of ``QUIRKSCOPE_MODEL_CACHE_SIZE``)."""
    from workers.engine.bundle import load_bundle

    row = session.get(ModelBundle, audit.model_id)
    if row.sha256 in _MODELS:
        _MODELS.move_to_end(row.sha256)
        return _MODELS[row.sha256]
    store = runtime.current().artifacts
    source: Any = store.local_path(row.artifact_key)
    if source is None or not Path(source).is_file():
        source = store.open(row.artifact_key).read()
    trusted = bool(session.get(Project, audit.project_id).trusted_pt2)
    model = load_bundle(source, trusted_pt2=trusted)
    remember_model(row.sha256, model, runtime.current().settings.model_cache_size)
    return model


def remember_model(sha256: str, model: Any, limit: int) -> None:
    """Keep ``model`` in this worker process's LRU of ``limit`` (at least 1) models; a model dropped from it drops
    the factor-probe levers measured on it too."""
    _MODELS[sha256] = model
    _MODELS.move_to_end(sha256)
    while len(_MODELS) > max(limit, 1):
        _PROBE_LEVERS.pop(_MODELS.popitem(last=False)[0], None)


def audit_inputs(audit: Audit) -> tuple[Any, Any, Any]:
    """(manifest, confusion matrix, options) of the audit, rebuilt from its rows."""
    from workers.audit.confusion import ConfusionMatrix
    from workers.audit.options import AuditOptions
    from workers.engine.manifest import parse_manifest

    manifest = parse_manifest(audit.model.manifest)
    cm = ConfusionMatrix(audit.confusion["classes"], audit.confusion["matrix"])
    return manifest, cm, AuditOptions.model_validate(audit.options)


def ranked_pair(row: ClassPair) -> Any:
    from workers.audit.ranking import RankedPair

    return RankedPair.from_confusion_json(row.class_a, row.class_b, row.rank, row.confusion, row.explicit)


def tensor_key(audit_id: int, cls: str, stream: str, level: int, seed: int) -> str:
    return f"audits/{audit_id}/tensors/{cls}__{stream}__k{level}__s{seed}.npy"


def upload_tree(audit_id: int, root: Path) -> None:
    """Copy every file under ``root`` to ``audits/<id>/<relative path>`` in the artifact store."""
    store = runtime.current().artifacts
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        store.put_file(f"audits/{audit_id}/{path.relative_to(root).as_posix()}", path)


def load_visualizations(session: Session, audit_id: int, classes: set[str] | None = None) -> list[Any]:
    """The pipeline's ``Visualization`` objects of the audit (optionally of some classes), from the rows
    (one per stream) and their ``.npy`` tensors."""
    import numpy as np

    from workers.audit.pipeline import ObjectiveKey
    from workers.audit.pipeline import Visualization as Vis

    stmt = select(Visualization).where(Visualization.audit_id == audit_id)
    if classes is not None:
        stmt = stmt.where(Visualization.class_name.in_(sorted(classes)))
    grouped: dict[tuple[str, int, int], list[Visualization]] = {}
    for row in session.scalars(stmt):
        grouped.setdefault((row.class_name, row.level, row.seed), []).append(row)
    store = runtime.current().artifacts
    out = []
    for (cls, level, seed), rows in sorted(grouped.items()):
        tensors = {r.stream: np.load(io.BytesIO(store.open(f"audits/{audit_id}/{r.artifacts['npy']}").read()))
                   for r in rows}
        first = rows[0]
        out.append(Vis(key=ObjectiveKey(cls, level, seed), kappa=float(first.kappa or 0.0), tensors=tensors,
                       logit=float(first.objective or 0.0), probability=float(first.probability or 0.0),
                       config=first.config))
    return out


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


# ------------------------------------------------------------------------------------------------- tasks

@shared_task(name="workers.tasks.start_audit", queue="cpu", **TASK_OPTIONS)
def start_audit(self, audit_id: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Plan the audit (``pipeline.plan_audit``), store its work items, and start the first stage."""

    def body(session: Session, _item: WorkItem) -> None:
        from workers.audit.pipeline import plan_audit, streams_and_levels

        session.execute(update(Audit).where(Audit.id == audit_id, Audit.status == "queued")
                        .values(status="running", started_at=utcnow()))
        audit = session.get(Audit, audit_id)
        manifest, cm, options = audit_inputs(audit)
        # the pairs the API ranked and stored are the audit's pairs: not ranked a second time here
        stored = sorted(audit.pairs, key=lambda p: p.rank)
        plan = plan_audit(manifest, cm, options, pairs=[ranked_pair(p) for p in stored])
        keys = [[k.class_name, k.level, k.seed] for k in plan.keys]
        chunk_size = planned_chunk_size(session, audit, runtime.current().settings.chunk_size)
        items = [WorkItem(audit_id=audit_id, kind="visualise", key=i,
                          payload={"task": "workers.tasks.visualise_chunk", "args": [audit_id, i], "queue": "gpu",
                                   "keys": chunk})
                 for i, chunk in enumerate(_chunks(keys, chunk_size))]
        items += [WorkItem(audit_id=audit_id, kind="evaluate", key=p.rank,
                           payload={"task": "workers.tasks.evaluate_pair", "args": [audit_id, p.rank], "queue": "gpu"})
                  for p in plan.pairs]
        items += [WorkItem(audit_id=audit_id, kind="score", key=p.rank,
                           payload={"task": "workers.tasks.score_pair", "args": [audit_id, p.rank], "queue": "cpu"})
                  for p in plan.pairs]
        items.append(WorkItem(audit_id=audit_id, kind="report", key=0,
                              payload={"task": "workers.tasks.render_report", "args": [audit_id], "queue": "cpu"}))
        existing = {(w.kind, w.key) for w in session.scalars(select(WorkItem).where(WorkItem.audit_id == audit_id))}
        session.add_all([w for w in items if (w.kind, w.key) not in existing])
        audit.plan = {**streams_and_levels(manifest, options), "n_objectives": len(plan.keys),
                      "n_chunks": len(_chunks(keys, chunk_size)), "chunk_size": chunk_size}
        session.commit()

    outcome = run_item(self, audit_id, "plan", 0, body)
    if outcome == "done":
        advance_audit.delay(audit_id)
    return outcome


@shared_task(name="workers.tasks.visualise_chunk", queue="gpu", **CHORD_MEMBER)
def visualise_chunk(self, audit_id: int, chunk: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Optimise one chunk of objectives as one batch (``pipeline.visualise``; with ``partner_contrast`` on, each
    class is set apart from the classes the audit pairs it with); store each result's tensors and one
    ``Visualization`` row per stream, keyed by (audit, class, stream, level, seed)."""

    def body(session: Session, item: WorkItem) -> None:
        import numpy as np

        from workers.audit.pipeline import ObjectiveKey, visualise
        from workers.audit.ranking import audited_partners
        from workers.engine.cost import count_evaluations
        from workers.engine.optimise import resolve_device

        audit = session.get(Audit, audit_id)
        _, _, options = audit_inputs(audit)
        model = load_model(session, audit)
        keys = [ObjectiveKey(c, int(level), int(seed)) for c, level, seed in item.payload["keys"]]
        partners = audited_partners([(p.class_a, p.class_b) for p in audit.pairs])
        end_snapshot(session)
        memory = gpu_memory_probe()
        t0 = time.perf_counter()
        with count_evaluations() as spent:
            results = visualise(model, keys, options, partners=partners)
        elapsed = time.perf_counter() - t0
        metrics.visualisation_finished(len(keys), options.steps, elapsed, resolve_device(None).type)
        store = runtime.current().artifacts
        for vis in results:
            for stream, tensor in vis.tensors.items():
                key = tensor_key(audit_id, vis.key.class_name, stream, vis.key.level, vis.key.seed)
                buf = io.BytesIO()
                np.save(buf, np.asarray(tensor))
                store.put_bytes(key, buf.getvalue())
                _upsert_visualization(session, audit_id, vis, stream, key.removeprefix(f"audits/{audit_id}/"))
        item.payload = {**item.payload, "seconds": round(elapsed, 3), "device": str(resolve_device(None)),
                        "cost": spent.to_json(), **memory.measure(len(keys))}
        session.commit()

    outcome = run_item(self, audit_id, "visualise", chunk, body)
    _after_reaped(audit_id, reaped)
    return outcome


def _upsert_visualization(session: Session, audit_id: int, vis: Any, stream: str, npy: str) -> None:
    row = session.scalar(select(Visualization).where(
        Visualization.audit_id == audit_id, Visualization.class_name == vis.key.class_name,
        Visualization.stream == stream, Visualization.level == vis.key.level, Visualization.seed == vis.key.seed))
    if row is None:
        row = Visualization(audit_id=audit_id, class_name=vis.key.class_name, stream=stream, level=vis.key.level,
                            seed=vis.key.seed)
        session.add(row)
    row.config = dict(vis.config)
    row.objective = float(vis.logit)
    row.kappa = float(vis.kappa)
    row.probability = float(vis.probability)
    row.artifacts = {"npy": npy}


def evidence_key(audit_id: int, row: ClassPair) -> str:
    return f"audits/{audit_id}/pairs/{row.class_a}__{row.class_b}__evidence.json"


@shared_task(name="workers.tasks.evaluate_pair", queue="gpu", **CHORD_MEMBER)
def evaluate_pair(self, audit_id: int, rank: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Every model evaluation of one pair (``pipeline.measure_pair``), in the GPU worker that holds the model,
    right after the visualisations; stores the evidence (plain numbers) for ``score_pair``, keyed by the pair."""

    def body(session: Session, item: WorkItem) -> None:
        from workers.audit.pipeline import evidence_config, measure_pair, pair_null_pairs, pair_swap_null_pairs
        from workers.engine.optimise import resolve_device

        audit = session.get(Audit, audit_id)
        model = load_model(session, audit)
        _, _, options = audit_inputs(audit)
        row = pair_by_rank(session, audit_id, rank)
        pair = ranked_pair(row)
        ranked = [ranked_pair(r) for r in audit.pairs]
        nulls = pair_null_pairs(ranked, pair, options)
        swap_nulls = pair_swap_null_pairs(ranked, pair, nulls)
        vis = load_visualizations(session, audit_id, {row.class_a, row.class_b, *(c for _, c in [*nulls, *swap_nulls])})
        end_snapshot(session)
        t0 = time.perf_counter()
        evidence = measure_pair(model, pair, vis, config=evidence_config(options), nulls=nulls, swap_nulls=swap_nulls,
                                probe_cache=_PROBE_LEVERS.setdefault(audit.model.sha256, {}))
        runtime.current().artifacts.put_bytes(evidence_key(audit_id, row), json.dumps(evidence.to_json()).encode())
        item.payload = {**item.payload, "seconds": round(time.perf_counter() - t0, 3),
                        "device": str(resolve_device(None)), "cost": evidence.cost}
        session.commit()

    outcome = run_item(self, audit_id, "evaluate", rank, body)
    _after_reaped(audit_id, reaped)
    return outcome


@shared_task(name="workers.tasks.score_pair", queue="cpu", **CHORD_MEMBER)
def score_pair(self, audit_id: int, rank: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Scores and flags of one pair from its stored evidence and visualisations (``pipeline.judge_pair``: pure
    maths, no model), its difference maps rendered, stored keyed by the pair (flags keep their ids, and so their
    reviews, on a re-run). The one-stream flags compare the pair with the audit's other classes, and
    ``GLOBAL_APPEARANCE_CUE`` with its other pairs: the audit's leanings, gathered once from every pair's evidence,
    all of it stored before this stage starts (the evaluate stage's chord; ``stored_leanings``)."""

    def body(session: Session, _item: WorkItem) -> None:
        from workers.audit.pipeline import judge_pair, pair_entry, render_pair_artifacts

        audit = session.get(Audit, audit_id)
        manifest, _, options = audit_inputs(audit)
        row = pair_by_rank(session, audit_id, rank)
        leanings = stored_leanings(audit)
        vis = load_visualizations(session, audit_id, {row.class_a, row.class_b})
        end_snapshot(session)
        result = judge_pair(manifest, ranked_pair(row), read_evidence(audit_id, row), vis, options, leanings)
        with tempfile.TemporaryDirectory() as tmp:
            difference = render_pair_artifacts(manifest, result, vis, Path(tmp))
            upload_tree(audit_id, Path(tmp))
        entry = pair_entry(result, {}, difference)
        store_pair_result(session, row, entry)
        session.commit()

    outcome = run_item(self, audit_id, "score", rank, body)
    _after_reaped(audit_id, reaped)
    return outcome


def leanings_key(audit_id: int) -> str:
    return f"audits/{audit_id}/leanings.json"


def read_evidence(audit_id: int, row: ClassPair) -> PairEvidence:
    """A pair's stored evidence (``evaluate_pair``)."""
    from workers.audit.evidence import PairEvidence

    return PairEvidence.from_json(json.loads(runtime.current().artifacts.open(evidence_key(audit_id, row)).read()))


def stored_leanings(audit: Audit) -> AuditLeanings:
    """The audit's leanings (``pipeline.audit_leanings``) from every pair's evidence, gathered by the first score
    task that needs them and stored for the others (``leanings_key``): each task reading every pair's evidence
    read N^2 files an audit. All evidence is stored before the score stage starts and not changed after, so
    tasks that race to store them store the same."""
    from workers.audit.analysis import AuditLeanings
    from workers.audit.pipeline import audit_leanings

    store, key = runtime.current().artifacts, leanings_key(audit.id)
    if store.exists(key):
        return AuditLeanings.from_json(json.loads(store.open(key).read()))
    leanings = audit_leanings([read_evidence(audit.id, pair) for pair in audit.pairs])
    store.put_bytes(key, json.dumps(leanings.to_json()).encode())
    return leanings


def store_pair_result(session: Session, row: ClassPair, entry: dict[str, Any]) -> None:
    """Write a pair's scores, flags and difference maps (one report entry of ``pipeline.pair_entry``)."""
    streams = {s["name"] for s in (row_audit_streams(session, row.audit_id))}
    session.execute(delete(PairScore).where(PairScore.pair_id == row.id))
    for name, value in entry["scores"].items():
        if name in streams and isinstance(value, dict):
            session.add_all([PairScore(pair_id=row.id, name=k, stream=name, value=v) for k, v in value.items()])
        else:
            session.add(PairScore(pair_id=row.id, name=name, stream="", value=value))
    existing = {(f.code, f.stream): f for f in session.scalars(select(Flag).where(Flag.pair_id == row.id))}
    seen = set()
    for flag in entry["flags"]:
        key = (flag["code"], flag.get("stream") or "")
        seen.add(key)
        target = existing.get(key) or Flag(pair_id=row.id, audit_id=row.audit_id, code=key[0], stream=key[1])
        target.severity = str(flag.get("severity") or "medium")
        target.peak_xy = flag.get("peak_xy")
        target.message = flag.get("message") or ""
        target.fingerprint = flag.get("fingerprint") or ""
        target.detail = {k: v for k, v in flag.items()
                         if k not in ("code", "stream", "severity", "peak_xy", "message", "fingerprint")}
        session.add(target)
    for key, flag in existing.items():
        if key not in seen and not flag.reviews:
            session.delete(flag)
    row.artifacts = {**(row.artifacts or {}), "difference": entry["artifacts"]["difference"]}
    row.scored = True


def row_audit_streams(session: Session, audit_id: int) -> list[dict[str, str]]:
    audit = session.get(Audit, audit_id)
    return (audit.plan or {}).get("streams") or [{"name": i["name"]} for i in audit.model.manifest["inputs"]]


@shared_task(name="workers.tasks.render_report", queue="cpu", **TASK_OPTIONS)
def render_report(self, audit_id: int, reaped: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Render the clips of every class (``pipeline.render_class_artifacts``), then the report JSON
    (``pipeline.build_report``) and its HTML page into ``audits/<id>/``."""

    def body(session: Session, _item: WorkItem) -> None:
        from workers.audit.pipeline import build_report, render_class_artifacts
        from workers.audit.report_html import write_report
        from workers.audit.report_rows import build_report as rows_report

        audit = session.get(Audit, audit_id)
        manifest, cm, options = audit_inputs(audit)
        vis = load_visualizations(session, audit_id)
        end_snapshot(session)
        with tempfile.TemporaryDirectory() as tmp:
            clips = render_class_artifacts(manifest, vis, Path(tmp))
            for pair in audit.pairs:
                pair.artifacts = {**(pair.artifacts or {}),
                                  "clips": {c: clips.get(c, {}) for c in (pair.class_a, pair.class_b)}}
            session.flush()
            timings = item_timings(session, audit_id)
            audit.timings = {**(audit.timings or {}), **timings}
            rows = rows_report(audit)
            report = build_report(audit={k: rows["audit"][k] for k in ("id", "status", "timings", "model")},
                                  manifest=manifest, confusion=cm, options=options, pairs=rows["pairs"])
            write_report(report, Path(tmp))
            Path(tmp, "report.json").write_text(json.dumps(report, indent=1))
            upload_tree(audit_id, Path(tmp))
        audit.report_key = f"audits/{audit_id}/report.json"
        session.commit()

    return run_item(self, audit_id, "report", 0, body)


def item_timings(session: Session, audit_id: int) -> dict[str, Any]:
    """Seconds spent per stage, summed over its work items (wall time between claim and finish), and under
    ``cost`` the model evaluations per stage that the items recorded."""
    from db.session import as_utc

    out: dict[str, Any] = {}
    cost: dict[str, dict[str, int]] = {}
    for item in session.scalars(select(WorkItem).where(WorkItem.audit_id == audit_id, WorkItem.status == "done")
                                .order_by(WorkItem.kind, WorkItem.key)):
        if item.started_at and item.finished_at:
            seconds = (as_utc(item.finished_at) - as_utc(item.started_at)).total_seconds()
            out[f"{item.kind}_s"] = round(out.get(f"{item.kind}_s", 0.0) + seconds, 3)
        for name, value in ((item.payload or {}).get("cost") or {}).items():
            stage = cost.setdefault(item.kind, {})
            stage[name] = stage.get(name, 0) + int(value)
    if cost:
        out["cost"] = cost
    return out
