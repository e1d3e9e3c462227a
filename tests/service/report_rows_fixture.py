"""Stored rows of a finished audit built from the sample report of ``tests/fixtures_report.py`` (three pairs, two
streams, scores, flags with evidence detail, a review), for the read tests and ``tests/benchmarks/read_cost.py``."""
from __future__ import annotations

import datetime as dt
from typing import Any

from db.models import Audit, ClassPair, Flag, ModelBundle, PairScore, Project, Review


def store_report(session: Any, report: dict[str, Any], project: str = "alpha") -> Audit:
    """Store ``report`` (DESIGN 3.4 shape) as a done audit of its model in ``project`` (both created when missing);
    commits and returns the audit row."""
    from sqlalchemy import select

    head = report["audit"]
    proj = session.scalar(select(Project).where(Project.name == project))
    if proj is None:
        proj = Project(name=project)
        session.add(proj)
        session.flush()
    model = session.scalar(select(ModelBundle).where(ModelBundle.project_id == proj.id,
                                                     ModelBundle.sha256 == head["model"]["sha256"]))
    if model is None:
        model = ModelBundle(project_id=proj.id, sha256=head["model"]["sha256"], name=head["model"]["name"],
                            version=head["model"]["version"], format="onnx", classes=head["classes"],
                            manifest={"inputs": head["streams"]}, size_bytes=1, artifact_key="models/x.zip")
        session.add(model)
        session.flush()
    audit = Audit(project_id=proj.id, model_id=model.id, status="done", stage="finished", progress=1.0,
                  options=head["options"], confusion=head["confusion"], timings=head["timings"],
                  plan={"streams": head["streams"], "levels": head["levels"]},
                  started_at=dt.datetime.now(dt.timezone.utc), finished_at=dt.datetime.now(dt.timezone.utc))
    session.add(audit)
    session.flush()
    stream_names = {s["name"] for s in head["streams"]}
    for entry in report["pairs"]:
        pair = ClassPair(audit_id=audit.id, rank=entry["rank"], class_a=entry["a"], class_b=entry["b"],
                         explicit=entry["explicit"], confusion=entry["confusion"], artifacts=entry["artifacts"],
                         scored=True)
        session.add(pair)
        session.flush()
        for name, value in entry["scores"].items():
            if name in stream_names and isinstance(value, dict):
                session.add_all(PairScore(pair_id=pair.id, name=k, stream=name, value=v) for k, v in value.items())
            else:
                session.add(PairScore(pair_id=pair.id, name=name, stream="", value=value))
        for item in entry["flags"]:
            flag = Flag(pair_id=pair.id, audit_id=audit.id, code=item["code"], stream=item["stream"],
                        severity=item["severity"], peak_xy=item["peak_xy"], message=item["message"],
                        detail={"class_name": entry["a"], "evidence": entry["scores"]})
            session.add(flag)
            session.flush()
            if item.get("review"):
                session.add(Review(flag_id=flag.id, verdict=item["review"]["verdict"], note=item["review"]["note"],
                                   reviewer=item["review"]["by"]))
    session.commit()
    return audit
