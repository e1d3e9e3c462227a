"""A running service for the integration and browser tests: real worker processes (``gpu`` and ``cpu``
queues), the API on a real HTTP server on loopback, the reaper; plus a small urllib client."""
from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    base_url: str
    token: str
    app: Any

    def request(self, method: str, path: str, body: Any = None, *, files: dict[str, tuple[str, bytes]] | None = None,
                token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if files:
            boundary = uuid.uuid4().hex
            parts = []
            for field, (filename, content) in files.items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                             f'filename="{filename}"\r\nContent-Type: application/zip\r\n\r\n'.encode()
                             + content + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw and resp.headers.get_content_type() == "application/json"
                                     else raw)
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw.startswith(b"{") else raw


@contextmanager
def running_stack(home: Path, env: dict[str, str], queues: tuple[str, ...] = ("gpu", "cpu")) -> Iterator[Stack]:
    """Start workers (one per queue in ``queues``), API server and reaper with ``env`` (QUIRKSCOPE_* variables)
    in the environment."""
    from service.app import create_app
    from service.commands import create_token, migrate, run_reaper, spawn_worker, stop_process
    from workers.settings import load_settings

    full_env = {"QUIRKSCOPE_HOME": str(home), "QUIRKSCOPE_SECRET_KEY": "test", "QUIRKSCOPE_COOKIE_SECURE": "0",
                "QUIRKSCOPE_HEARTBEAT_S": "1", "QUIRKSCOPE_STALE_AFTER_S": "30", "QUIRKSCOPE_REAPER_INTERVAL_S": "2",
                "PYTHONPATH": str(REPO), **env}
    saved = {k: os.environ.get(k) for k in full_env}
    os.environ.update(full_env)
    workers, server, stop = [], None, threading.Event()
    cwd = os.getcwd()
    try:
        settings = load_settings()
        migrate(settings)
        token = create_token("alpha", "submit,read,review,metrics", settings)
        os.chdir(REPO)
        workers = [spawn_worker([q], log_path=str(home / f"worker-{q}.log")) for q in queues]
        app = create_app(settings=settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Thread(target=run_reaper, args=(stop, app), daemon=True).start()
        yield Stack(f"http://127.0.0.1:{server.server_port}", token, app)
    finally:
        stop.set()
        if server is not None:
            server.shutdown()
        for proc in workers:
            stop_process(proc)
        os.chdir(cwd)
        restore_environ(saved)


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put back the environment variables ``saved`` holds (None: the variable was unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
