"""A small client of the QuirkScope API for the release gate (urllib, no extra dependency): find or upload a bundle
by its sha256, submit an audit, wait for it with a progress bar, read its report and its comparison with a baseline,
download the report folder. Answers the gate cannot act on become ``Unavailable`` (the server could not be reached,
or answered 5xx: exit 3) or ``InvalidInput`` (the server refused the input: exit 2), with the server's message."""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from workers.engine.errors import InvalidInput, QuirkScopeError, Unavailable

API = "/api/v1"
CHUNK = 1 << 20
FINISHED = ("done", "failed", "cancelled")
Progress = Callable[[float, str], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class GateClient:
    base_url: str
    token: str
    request_timeout: float = 60.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(f"--server must be an http(s) URL such as http://127.0.0.1:8000, got {self.base_url!r}",
                               field="server")
        self.base_url = self.base_url.rstrip("/")

    # ------------------------------------------------------------------------------------------------ transport

    def _send(self, method: str, path: str, *, body: Any = None, data: Any = None,
              headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, bytes, str]:
        url = path if path.startswith("http") else self.base_url + path
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.request_timeout) as resp:
                return resp.status, resp.read(), resp.headers.get_content_type()
        except urllib.error.HTTPError as err:
            raw = err.read()
            self._raise_for(err.code, raw, method, path)
            raise  # unreachable: _raise_for raises
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"cannot reach the QuirkScope server at {self.base_url}: {reason}",
                              field="server") from exc

    def _raise_for(self, status: int, raw: bytes, method: str, path: str) -> None:
        try:
            error = json.loads(raw).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        message = error.get("message") or raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        field = error.get("field")
        if status == 401:
            raise InvalidInput(f"the server refused the token ({message}); give --token or QUIRKSCOPE_TOKEN",
                               field="token")
        if status == 403:
            raise InvalidInput(f"the token may not do this ({message})", field="token")
        if 400 <= status < 500:
            raise InvalidInput(f"the server refused {method} {path}: {message}", field=field)
        raise Unavailable(f"the server failed on {method} {path} (HTTP {status}): {message}", field="server")

    def get_json(self, path: str, **query: Any) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        _, raw, _ = self._send("GET", path)
        return json.loads(raw)

    def get_bytes(self, path: str) -> bytes:
        return self._send("GET", path)[1]

    # ----------------------------------------------------------------------------------------------- endpoints

    def find_model(self, sha256: str) -> dict[str, Any] | None:
        models = self.get_json(f"{API}/models", sha256=sha256)["models"]
        return models[0] if models else None

    def upload_model(self, path: Path, progress: Progress | None = None) -> dict[str, Any]:
        """Upload a bundle as multipart field ``bundle``, streamed from disk in chunks (``progress(done, what)``)."""
        boundary = uuid.uuid4().hex
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; filename="{path.name}"\r\n'
                f"Content-Type: application/zip\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            yield head
            sent = 0
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    sent += len(block)
                    if progress:
                        progress(sent / max(size, 1), "upload")
                    yield block
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        _, raw, _ = self._send("POST", f"{API}/models", data=chunks(), headers=headers,
                               timeout=max(self.request_timeout, 600))
        return json.loads(raw)

    def create_audit(self, model_id: int, confusion: dict, options: dict, baseline: str | None) -> dict[str, Any]:
        body = {"model_id": model_id, "confusion": confusion, "options": options}
        if baseline is not None:
            body["baseline"] = baseline
        _, raw, _ = self._send("POST", f"{API}/audits", body=body)
        return json.loads(raw)

    def wait_for_audit(self, audit_id: int, timeout: float, progress: Progress | None = None,
                       interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
        """Poll the audit until it finishes; ``Unavailable`` when it failed, was cancelled or ``timeout`` passed."""
        deadline = clock() + timeout
        while True:
            state = self.get_json(f"{API}/audits/{audit_id}")
            if progress:
                progress(float(state.get("progress") or 0.0), state.get("stage") or state["status"])
            if state["status"] == "done":
                return state
            if state["status"] in FINISHED:
                why = (state.get("error") or {}).get("message") or state["status"]
                raise Unavailable(f"audit {audit_id} {state['status']}: {why}", field="audit")
            if clock() >= deadline:
                raise Unavailable(f"audit {audit_id} did not finish within {timeout:g}s (status {state['status']}, "
                                  f"{float(state.get('progress') or 0):.0%} done); it goes on on the server",
                                  field="timeout")
            time.sleep(min(interval, max(0.0, deadline - clock())))

    def reusable_audit(self, model: dict[str, Any], options: dict, confusion: dict) -> dict[str, Any] | None:
        """The newest finished audit of this very bundle with the same options and confusion matrix, if any: its
        results would be the same (seeded), and its reviews are the candidate's own."""
        audits = self.get_json(f"{API}/audits", model=model["name"], status="done")["audits"]
        for audit in audits:
            if audit["model"]["id"] == model["id"] and audit["options"] == options:
                report = self.report(audit["id"])
                if report["audit"].get("confusion") == confusion:
                    return audit
        return None

    def report(self, audit_id: int) -> dict[str, Any]:
        return self.get_json(f"{API}/audits/{audit_id}/pairs")

    def compare(self, audit_id: int, baseline: str) -> dict[str, Any]:
        return self.get_json(f"{API}/audits/{audit_id}/compare", baseline=baseline)

    def report_page(self, audit_id: int) -> str:
        return f"{self.base_url}/audits/{audit_id}"

    def download_report(self, audit_id: int, out_dir: Path) -> None:
        """The audit's static report folder (``index.html``, clips, difference maps), as the worker rendered it, so
        that it opens offline (a CI artifact)."""
        prefix = f"{API}/audits/{audit_id}/artifacts/"
        stored = json.loads(self.get_bytes(prefix + "report.json"))
        wanted = {"index.html", "confusion.png"} | set(_artifact_paths(stored))
        for rel in sorted(wanted):
            target = (out_dir / rel).resolve()
            if out_dir.resolve() not in target.parents:
                continue  # never write outside the folder
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.write_bytes(self.get_bytes(prefix + urllib.parse.quote(rel)))
            except QuirkScopeError:
                if rel == "index.html":
                    raise


def _artifact_paths(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("gif", "mp4", "png", "npy") and isinstance(item, str):
                yield item
            else:
                yield from _artifact_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _artifact_paths(item)


def token_from(explicit: str | None) -> str:
    token = explicit or os.environ.get("QUIRKSCOPE_TOKEN", "")
    if not token:
        raise InvalidInput("a server needs a token: give --token or set QUIRKSCOPE_TOKEN", field="token")
    return token
