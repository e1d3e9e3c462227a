"""One settings object for the service and its workers, read from ``QUIRKSCOPE_*`` environment variables,
with the embedded defaults (SQLite, local artifacts, kombu's ``filesystem://`` broker) under
``QUIRKSCOPE_HOME`` (default ``./.quirkscope``) when a variable is unset."""
from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from workers.engine.errors import InvalidInput

_PREFIX = "QUIRKSCOPE_"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    result_backend: str
    artifacts_url: str
    secret_key: str
    # artifact storage: QUIRKSCOPE_ARTIFACTS_URL=s3://bucket/prefix plus, for an S3-compatible server
    # (MinIO, Ceph), its endpoint URL; credentials from boto3's chain (AWS_ACCESS_KEY_ID, ...)
    artifacts_endpoint_url: str = ""
    artifacts_region: str = ""
    artifacts_multipart_mb: int = 8  # uploads above this go in parts of this size (S3's minimum is 5)
    # metrics: the API's /metrics wants a bearer token with the `metrics` scope, or this static bearer
    # token when set; metrics_public opens it to anyone (for scrapes on a private network); a worker
    # serves its metrics on this port when set (0: none), at this address (an IP; 0.0.0.0 or :: for all),
    # under the same rules, and on a non-loopback address only with the token or metrics_public
    metrics_token: str = ""
    metrics_public: bool = False
    worker_metrics_port: int = 0
    worker_metrics_addr: str = "127.0.0.1"
    # limits (all enforced with a 4xx)
    max_upload_bytes: int = 512 * 1024 * 1024
    max_json_bytes: int = 32 * 1024 * 1024
    max_classes: int = 2000
    max_top_k: int = 100
    # upload spool ($QUIRKSCOPE_HOME/uploads): the API deletes spool files older than this when it starts
    # (left by a process killed mid-upload; a live upload writes its file at least once a MiB); 0: never
    spool_max_age_s: float = 3600.0
    # sessions
    cookie_secure: bool = True
    # worker behaviour
    soft_time_limit_s: int = 3300
    hard_time_limit_s: int = 3600
    visibility_timeout_s: int = 4 * 3600
    max_attempts: int = 3
    retry_backoff_s: int = 5
    retry_backoff_max_s: int = 300
    max_tasks_per_child: int = 20
    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    reaper_interval_s: float = 15.0
    chunk_size: int = 64
    model_cache_size: int = 2
    task_modules: str = ""  # extra comma-separated modules the workers import (plugins, test tasks)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def spool_dir(self) -> Path:
        """Where the API spools uploaded bundles while it checks them."""
        return self.home / "uploads"

    @property
    def broker_dirs(self) -> dict[str, Path]:
        """Folders of the filesystem broker (same filesystem, so claiming a message is an atomic rename)."""
        base = self.home / "broker"
        return {"queue": base / "queue", "processed": base / "processed", "control": base / "control"}


def _secret_key(home: Path, env: Mapping[str, str]) -> str:
    """``QUIRKSCOPE_SECRET_KEY``, else the key in ``QUIRKSCOPE_HOME/secret_key``, created once (atomically: a
    complete file is linked into place, so concurrent processes all read the same key). A key file that
    exists but cannot be read is an error, never a silent per-process key (sessions would break between
    processes)."""
    if env.get(_PREFIX + "SECRET_KEY"):
        return env[_PREFIX + "SECRET_KEY"]
    path = home / "secret_key"
    field = _PREFIX + "SECRET_KEY"
    if not path.exists():
        try:
            home.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=home, prefix=".secret_key.")
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # fails if another process created it first: then its key wins
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise InvalidInput(f"cannot create the secret key file {path}: {exc.strerror}; "
                               f"set {field} or make {home} writable", field=field) from exc
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read the secret key file {path}: {exc.strerror}; "
                           f"set {field} or fix the file's permissions", field=field) from exc
    if not key:
        raise InvalidInput(f"the secret key file {path} is empty; delete it or set {field}", field=field)
    return key


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``env`` (default ``os.environ``); ``overrides`` win over both."""
    env = os.environ if env is None else env
    home = Path(overrides.pop("home", None) or env.get(_PREFIX + "HOME") or "./.quirkscope").resolve()
    defaults = {
        "database_url": f"sqlite:///{home / 'quirkscope.db'}",
        "broker_url": "filesystem://",
        "result_backend": f"db+sqlite:///{home / 'celery-results.db'}",
        "artifacts_url": f"file://{home / 'artifacts'}",
    }
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        values[name] = overrides.pop(name, None) or env.get(_PREFIX + name.upper()) or default
    values["secret_key"] = overrides.pop("secret_key", None) or _secret_key(home, env)
    base = Settings(home=home, **values)
    tunables: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in values or f.name in ("home", "extra"):
            continue
        raw = env.get(_PREFIX + f.name.upper())
        if raw is not None and raw != "":
            tunables[f.name] = _coerce(raw, getattr(base, f.name))
    if base.embedded and (_PREFIX + "COOKIE_SECURE") not in env:
        tunables["cookie_secure"] = False  # embedded mode serves plain http on loopback
    tunables.update(overrides)
    settings = replace(base, **tunables)
    if settings.soft_time_limit_s >= settings.hard_time_limit_s:
        raise ValueError("QUIRKSCOPE_SOFT_TIME_LIMIT_S must be below QUIRKSCOPE_HARD_TIME_LIMIT_S")
    if settings.visibility_timeout_s <= settings.hard_time_limit_s:
        raise ValueError("QUIRKSCOPE_VISIBILITY_TIMEOUT_S must exceed the hard time limit")
    _check_worker_metrics(settings)
    _refuse_placeholder_secrets(settings, env)
    return settings


PLACEHOLDER = "CHANGE_ME"
_SECRET_SETTINGS = ("secret_key", "metrics_token", "database_url", "broker_url", "result_backend")


def _refuse_placeholder_secrets(settings: Settings, env: Mapping[str, str]) -> None:
    """A secret still holding the ``CHANGE_ME`` placeholder the deployment templates ship (deploy/k8s) is an error
    naming it, never a running service whose cookies, metrics or database anyone who read the template can use."""
    values = {_PREFIX + name.upper(): getattr(settings, name) for name in _SECRET_SETTINGS}
    values.update({name: env.get(name, "") for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    for name, value in values.items():
        if PLACEHOLDER in str(value).upper():
            raise InvalidInput(f"{name} still holds the {PLACEHOLDER} placeholder of the deployment template; "
                               "set a real secret", field=name)


def bind_address(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a server given ``addr`` binds to (``localhost`` is 127.0.0.1), or None when ``addr`` is
    neither an IP address nor ``localhost``."""
    try:
        return ipaddress.ip_address("127.0.0.1" if addr == "localhost" else addr)
    except ValueError:
        return None


def is_bind_address(addr: str) -> bool:
    """``addr`` is something a worker metrics server can bind to: an IP address, or ``localhost``."""
    return bind_address(addr) is not None


def _check_worker_metrics(settings: Settings) -> None:
    """The worker metrics port is a TCP port (0: none) and its address an IP address, or ``localhost``."""
    if not 0 <= settings.worker_metrics_port <= 65535:
        raise InvalidInput(f"QUIRKSCOPE_WORKER_METRICS_PORT must be 0 (none) to 65535, "
                           f"not {settings.worker_metrics_port}", field=_PREFIX + "WORKER_METRICS_PORT")
    if not is_bind_address(settings.worker_metrics_addr):
        raise InvalidInput(f"QUIRKSCOPE_WORKER_METRICS_ADDR must be an IP address (127.0.0.1, 0.0.0.0, ::, "
                           f"10.0.0.2, ...), not {settings.worker_metrics_addr!r}",
                           field=_PREFIX + "WORKER_METRICS_ADDR")
