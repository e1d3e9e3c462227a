"""The load generator of tests/benchmarks/load.py (``tests/benchmarks/http_burst.py``): every request sent at once on
its own connection, answers in request order, and every request that got no complete 2xx answer told apart --
an error status, a refused connection, a body cut short."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.benchmarks.http_burst import build_request, burst, parse_answer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 200 if self.path == "/echo" else 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) + 1))
        self.end_headers()
        self.wfile.write(body + (b"!" if status == 200 else b"?"))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_every_request_gets_its_own_answer_in_order(server: int) -> None:
    requests = [build_request("POST", "x", "/echo" if i % 3 else "/nope", {"X-Test": "1"}, str(i).encode())
                for i in range(60)]
    assert burst("127.0.0.1", server, [], timeout_s=30) == []
    answers = burst("127.0.0.1", server, requests, timeout_s=30)
    assert [(a.status, a.body) for a in answers] == [
        (200, f"{i}!".encode()) if i % 3 else (404, f"{i}?".encode()) for i in range(60)]
    assert all(a.seconds > 0 for a in answers)


def test_a_refused_connection_is_an_answer_with_status_zero() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it
    [answer] = burst("127.0.0.1", port, [build_request("GET", "x", "/")], timeout_s=30)
    assert answer.status == 0 and answer.body.startswith(b"connect:")


def test_a_body_cut_short_or_a_garbled_head_is_no_answer() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert parse_answer(head + b"0123456789", 0.1).status == 200
    assert parse_answer(head + b"01234", 0.1).status == 0
    assert parse_answer(b"HTTP/1.1 200 OK\r\nContent-Le", 0.1).status == 0
    assert parse_answer(b"", 0.1, "reset by peer").body.startswith(b"reset by peer")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert parse_answer(chunked + b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n", 0.1).body == b"abcdef"
    assert parse_answer(chunked + b"4\r\nabcd\r\n", 0.1).status == 0


def test_the_floor_benchmark_serves_both_do_nothing_apps_under_gunicorn(tmp_path) -> None:
    # tests/benchmarks/http_floor.py: the same bursts against gunicorn serving apps that do no work; each app must
    # answer every request with its fixed body, or the floor it prints would not be a floor of a read
    pytest.importorskip("gunicorn")
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "floor.json"
    script = str(repo / "tests/benchmarks/http_floor.py")
    run = subprocess.run([sys.executable, script, "--reads", "20", "--bursts", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    apps = json.loads(out.read_text())["apps"]
    assert set(apps) == {"plain WSGI", "Flask, one route"}
    for bursts in apps.values():
        assert [(b["requests"], b["errors"]) for b in bursts] == [(20, 0)]
    bad = subprocess.run([sys.executable, script, "--reads", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("http_floor: error [--reads"), bad.stderr
