"""The HTTP server of a worker's metrics port, under the same policy as the API's ``/metrics``: it listens on
loopback unless ``QUIRKSCOPE_WORKER_METRICS_ADDR`` names another address; when ``QUIRKSCOPE_METRICS_TOKEN`` is
set every request needs ``Authorization: Bearer <token>`` (else 401 with a JSON error body);
``QUIRKSCOPE_METRICS_PUBLIC=1`` opens it to anyone. Without a token and without ``PUBLIC`` it serves only on a
loopback address (a local scrape) and refuses to start on any other.

prometheus-client's own ``start_http_server`` offers TLS and client certificates but no bearer token and no
custom WSGI app, so this wraps the app of ``make_wsgi_app`` and serves it with wsgiref from a daemon thread."""
from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from workers.settings import bind_address

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_loopback(addr: str) -> bool:
    """Whether ``addr`` (an IP address, or ``localhost``) only accepts connections from this host."""
    ip = bind_address(addr)
    return ip is not None and ip.is_loopback


def refusal(addr: str, token: str, public: bool) -> str | None:
    """Why metrics must not be served on ``addr`` with this token and public setting, or None when they may."""
    if token or public or is_loopback(addr):
        return None
    return (f"not serving worker metrics on {addr}: QUIRKSCOPE_METRICS_TOKEN is not set and QUIRKSCOPE_METRICS_PUBLIC "
            f"is not 1; set the token (scrapers send it as 'Authorization: Bearer <token>'), "
            f"QUIRKSCOPE_METRICS_PUBLIC=1 (a private network), or QUIRKSCOPE_WORKER_METRICS_ADDR={LOOPBACK}")


def bearer_ok(header: str, token: str) -> bool:
    """``header`` is ``Bearer <token>`` (the token compared in constant time); the API's /metrics checks its static
    token with it too."""
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())


def guarded(app: WSGIApp, token: str) -> WSGIApp:
    """``app`` behind the bearer ``token``: a request without it, or with another, gets a 401 JSON error."""
    body = json.dumps({"error": {"code": "unauthorized", "field": "Authorization",
                                 "message": "worker metrics need 'Authorization: Bearer <QUIRKSCOPE_METRICS_TOKEN>'"}
                       }).encode()

    def guarded_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if bearer_ok(environ.get("HTTP_AUTHORIZATION", ""), token):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                            ("WWW-Authenticate", 'Bearer realm="quirkscope"')])
        return [body]

    return guarded_app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server_class(addr: str) -> type[WSGIServer]:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class ThreadingServer(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True  # a slow scraper never holds the worker's shutdown

    return ThreadingServer


def start(app: WSGIApp, port: int, addr: str = LOOPBACK, *, token: str = "", public: bool = False) -> WSGIServer | None:
    """Serve ``app`` on ``addr:port`` (port 0: any free one) from a daemon thread, behind ``token`` unless
    ``public``; returns the server (``server_address`` says where; ``shutdown()`` stops it), or None, with an
    error logged, when ``refusal`` says it must not start."""
    why = refusal(addr, token, public)
    if why:
        log.error(why)
        return None
    if token and not public:
        app = guarded(app, token)
    server = make_server(addr, port, app, server_class=_server_class(addr), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"worker-metrics-{port}", daemon=True).start()
    host, bound = server.server_address[:2]
    log.info("serving worker metrics on %s:%s (%s)", host, bound,
             "public" if public else "bearer token" if token else "loopback only, no token")
    return server
