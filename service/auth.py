"""API tokens and who is asking: token creation (printed once, stored only as a hash), bearer and
session-cookie authentication, and scope checks (``submit``, ``read``, ``review`` scoped to one project;
``metrics`` for the service-wide ``/metrics``).

Why a plain SHA-256 and no salt: a token is 256 bits from ``secrets``, so there is no dictionary to
precompute and no two users share a token; salts (and slow hashes) protect low-entropy secrets such as
passwords. An unsalted hash also lets us find the row by an indexed equality lookup."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from hmac import compare_digest

from flask import request, session
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from db.models import SCOPES, ApiToken, Project, scope_set
from service.errors_http import NotAuthenticated, PermissionDenied
from service.extensions import db as database
from workers.engine.errors import InvalidInput

TOKEN_PREFIX = "qs_"
SESSION_KEY = "token_hash"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a token of one project with some scopes."""

    token_id: int
    project_id: int
    project_name: str
    scopes: frozenset[str]
    label: str  # token prefix, recorded on reviews

    def require(self, scope: str) -> "Principal":
        if scope not in self.scopes:
            raise PermissionDenied(f"this token lacks the '{scope}' scope", field="scope")
        return self


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(scopes: str | list[str] | tuple[str, ...]) -> list[str]:
    items = [s.strip() for s in (scopes.split(",") if isinstance(scopes, str) else scopes) if s.strip()]
    unknown = sorted(set(items) - set(SCOPES))
    if unknown or not items:
        raise InvalidInput(f"scopes must be a non-empty subset of {list(SCOPES)}, got {items}", field="scopes")
    return [s for s in SCOPES if s in items]


def issue_token(db: Session, project: str, scopes: str | list[str]) -> str:
    """Create (or reuse) the project, store the hash of a new token, and return the token itself."""
    wanted = parse_scopes(scopes)
    if not project or len(project) > 120:
        raise InvalidInput("project name must be 1-120 characters", field="project")
    proj = db.scalar(select(Project).where(Project.name == project))
    if proj is None:
        proj = Project(name=project)
        db.add(proj)
        db.flush()
    token = generate_token()
    db.add(ApiToken(project_id=proj.id, token_hash=hash_token(token), prefix=token[:10], scopes=",".join(wanted)))
    db.commit()
    return token


_tokens, _projects = ApiToken.__table__, Project.__table__
# Built once, on the tables (no ORM entities to load): every API request runs it.
TOKEN_LOOKUP = (select(_tokens.c.id, _tokens.c.project_id, _projects.c.name, _tokens.c.scopes, _tokens.c.prefix,
                       _tokens.c.token_hash)
                .join(_projects, _tokens.c.project_id == _projects.c.id)
                .where(_tokens.c.token_hash == bindparam("token_hash"), _tokens.c.revoked_at.is_(None)))


def principal_for_hash(db: Session, token_hash: str) -> Principal | None:
    """The unrevoked token with this hash and its project's name, in one query (read afresh on every request, so
    a revocation counts from the next request on), or None."""
    row = db.connection().execute(TOKEN_LOOKUP, {"token_hash": token_hash}).first()
    # The indexed lookup compares hashes, which tell an attacker timing them nothing about a token; the
    # constant-time comparison makes that independent of how the database compares strings.
    if row is None or not compare_digest(row.token_hash, token_hash):
        return None
    return Principal(row.id, row.project_id, row.name, scope_set(row.scopes), row.prefix)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_principal(scope: str, *, allow_session: bool | None = None) -> Principal:
    """The caller of this request, checked for ``scope``. Bearer tokens work everywhere; the login
    session cookie works for safe methods (GET/HEAD), and for the HTML forms, which carry a CSRF token."""
    cached: Principal | None = request.environ.get("quirkscope.principal")
    if cached is None:
        db = database.session
        token = _bearer()
        if token is not None:
            cached = principal_for_hash(db, hash_token(token))
            if cached is None:
                raise NotAuthenticated("unknown or revoked token")
        else:
            if allow_session is None:
                allow_session = request.method in ("GET", "HEAD")
            stored = session.get(SESSION_KEY) if allow_session else None
            cached = principal_for_hash(db, stored) if stored else None
            if cached is None:
                raise NotAuthenticated("missing bearer token (Authorization: Bearer <token>)")
        request.environ["quirkscope.principal"] = cached
    return cached.require(scope)
