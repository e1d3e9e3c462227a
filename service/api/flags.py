"""Flag routes: read a flag with its review history, and review it (confirmed / dismissed / needs-data)."""
from __future__ import annotations

from flask_openapi3 import Tag

from db.models import Audit, Flag, Review
from service.api.blueprint import api_blueprint, requires
from service.api.schemas import ErrorOut, FlagOut, FlagPath, ReviewBody, ReviewOut
from service.auth import Principal, current_principal
from service.errors_http import NotFound
from service.extensions import db
from workers.audit.report_rows import flag_dict, review_dict

tag = Tag(name="flags", description="flags raised on pairs, and their reviews")


def get_flag(project_id: int, flag_id: int) -> Flag:
    flag = db.session.get(Flag, flag_id)
    if flag is None or db.session.get(Audit, flag.audit_id).project_id != project_id:
        raise NotFound(f"no flag {flag_id} in this project", field="flag_id")
    return flag


def flag_out(flag: Flag) -> dict:
    pair = flag.pair
    out = flag_dict(flag)
    out.update({"audit_id": flag.audit_id, "pair": {"a": pair.class_a, "b": pair.class_b, "rank": pair.rank},
                "reviews": [review_dict(r) for r in flag.reviews]})
    return out


def record_review(principal: Principal, flag: Flag, verdict: str, note: str) -> Review:
    review = Review(flag_id=flag.id, verdict=verdict, note=note, reviewer=principal.label)
    db.session.add(review)
    db.session.commit()
    db.session.refresh(flag)
    return review


@api_blueprint.get("/flags/<int:flag_id>", tags=[tag], responses={200: FlagOut, 404: ErrorOut})
@requires("read")
def get_flag_route(path: FlagPath):
    return flag_out(get_flag(current_principal("read").project_id, path.flag_id))


@api_blueprint.post("/flags/<int:flag_id>/review", tags=[tag], responses={200: ReviewOut, 404: ErrorOut})
@requires("review")
def review_flag(path: FlagPath, body: ReviewBody):
    """Record a verdict on a flag; the newest review is the flag's current verdict."""
    principal = current_principal("review")
    flag = get_flag(principal.project_id, path.flag_id)
    return review_dict(record_review(principal, flag, body.verdict, body.note))
