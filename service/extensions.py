"""Extension objects created unbound at import and bound to an app in ``create_app`` (the Flask pattern),
plus accessors for the current app's settings, artifact store and Celery app."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

from db.session import Database

if TYPE_CHECKING:  # pragma: no cover
    from celery import Celery

    from db.artifacts import ArtifactStore
    from workers.settings import Settings

db = Database()


def settings() -> "Settings":
    return current_app.extensions["quirkscope_settings"]


def artifact_store() -> "ArtifactStore":
    return current_app.extensions["quirkscope_artifacts"]


def celery_app() -> "Celery":
    return current_app.extensions["celery"]
