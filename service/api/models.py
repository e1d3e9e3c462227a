"""Model bundle routes: upload (content-addressed: the same bytes give the same row back), list, get."""
from __future__ import annotations

from flask_openapi3 import Tag
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.models import ModelBundle
from db.session import as_utc
from service.api.blueprint import api_blueprint, requires
from service.api.bundles import discard, intake, sweep_spool_now_and_then
from service.api.schemas import ErrorOut, ModelListOut, ModelListQuery, ModelOut, ModelPath, ModelUploadForm
from service.auth import current_principal
from service.errors_http import NotFound
from service.extensions import artifact_store, db, settings

tag = Tag(name="models", description="model bundles (DESIGN 3.1)")


def model_out(row: ModelBundle) -> dict:
    return ModelOut(id=row.id, sha256=row.sha256, name=row.name, version=row.version, format=row.format,
                    classes=row.classes, size_bytes=row.size_bytes,
                    created_at=as_utc(row.created_at)).model_dump(mode="json")


def get_model(project_id: int, model_id: int) -> ModelBundle:
    row = db.session.get(ModelBundle, model_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"no model {model_id} in this project", field="model_id")
    return row


@api_blueprint.post("/models", tags=[tag], responses={201: ModelOut, 200: ModelOut, 413: ErrorOut, 422: ErrorOut})
@requires("submit")
def upload_model(form: ModelUploadForm):
    """Upload a bundle (multipart field ``bundle``); 201 when new, 200 with the existing id when the same
    bytes were uploaded to this project before."""
    principal = current_principal("submit")
    conf = settings()
    sweep_spool_now_and_then(conf.spool_dir, conf.spool_max_age_s)
    bundle = intake(form.bundle.stream, conf.spool_dir, conf.max_upload_bytes)
    try:
        session = db.session
        existing = session.scalar(select(ModelBundle).where(ModelBundle.project_id == principal.project_id,
                                                            ModelBundle.sha256 == bundle.sha256))
        if existing is not None:
            return model_out(existing), 200
        key = f"models/{bundle.sha256}.zip"
        store = artifact_store()
        if not store.exists(key):
            store.put_file(key, bundle.path)
        m = bundle.manifest
        row = ModelBundle(project_id=principal.project_id, sha256=bundle.sha256, name=m.name, version=m.version,
                          format=m.format, classes=list(m.classes), manifest=m.model_dump(mode="json"),
                          size_bytes=bundle.size, artifact_key=key)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # the same bytes, uploaded concurrently
            session.rollback()
            row = session.scalar(select(ModelBundle).where(ModelBundle.project_id == principal.project_id,
                                                           ModelBundle.sha256 == bundle.sha256))
            return model_out(row), 200
        return model_out(row), 201
    finally:
        discard(bundle)


@api_blueprint.get("/models", tags=[tag], responses={200: ModelListOut})
@requires("read")
def list_models(query: ModelListQuery):
    """The project's bundles; ``sha256=`` asks whether these bytes were uploaded already, ``name=`` lists versions."""
    principal = current_principal("read")
    stmt = select(ModelBundle).where(ModelBundle.project_id == principal.project_id)
    if query.sha256:
        stmt = stmt.where(ModelBundle.sha256 == query.sha256.lower())
    if query.name:
        stmt = stmt.where(ModelBundle.name == query.name)
    rows = db.session.scalars(stmt.order_by(ModelBundle.name, ModelBundle.created_at)).all()
    return {"models": [model_out(r) for r in rows]}


@api_blueprint.get("/models/<int:model_id>", tags=[tag], responses={200: ModelOut, 404: ErrorOut})
@requires("read")
def get_model_route(path: ModelPath):
    return model_out(get_model(current_principal("read").project_id, path.model_id))
