"""A worker's metrics port follows the policy of the API's ``/metrics``: loopback by default,
``QUIRKSCOPE_WORKER_METRICS_ADDR`` (or ``quirkscope worker --metrics-addr``) for another address, the bearer
``QUIRKSCOPE_METRICS_TOKEN`` (401 with a JSON body without it), no start on a non-loopback address without a
token unless ``QUIRKSCOPE_METRICS_PUBLIC=1``. Servers run in-process on ephemeral ports; no broker."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from workers.engine.errors import InvalidInput
from workers.settings import Settings, load_settings
from workers.tasks import metrics
from workers.tasks.metrics_http import is_loopback


def settings_of(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={f"QUIRKSCOPE_{k.upper()}": v for k, v in env.items()}, home=tmp_path, secret_key="x")


def get(server: Any, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET /metrics from ``server`` over loopback, with ``token`` as a bearer token when given."""
    port = server.server_address[1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Servers a test started; shut down after it."""
    servers: list[Any] = []
    yield servers
    for server in servers:
        if server is not None:
            server.shutdown()
            server.server_close()


def test_worker_metrics_address_setting_defaults_to_loopback_and_is_validated(tmp_path: Path) -> None:
    assert settings_of(tmp_path).worker_metrics_addr == "127.0.0.1"
    assert settings_of(tmp_path, worker_metrics_addr="").worker_metrics_addr == "127.0.0.1"
    assert settings_of(tmp_path, worker_metrics_addr="0.0.0.0").worker_metrics_addr == "0.0.0.0"
    assert settings_of(tmp_path, worker_metrics_addr="::").worker_metrics_addr == "::"
    with pytest.raises(InvalidInput, match="must be an IP address") as info:
        settings_of(tmp_path, worker_metrics_addr="example.org")
    assert info.value.field == "QUIRKSCOPE_WORKER_METRICS_ADDR"
    with pytest.raises(InvalidInput, match="0 \\(none\\) to 65535") as info:
        settings_of(tmp_path, worker_metrics_port="70000")
    assert info.value.field == "QUIRKSCOPE_WORKER_METRICS_PORT"


def test_loopback_addresses_are_told_from_the_others() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.2", "192.168.1.5", "worker.example.org"]))


def test_default_serves_on_loopback_to_a_local_scrape_without_a_token(tmp_path: Path, started: list[Any]) -> None:
    server = metrics.serve_for(settings_of(tmp_path))  # port 0 here: any free one
    started.append(server)
    assert server is not None and server.server_address[0] == "127.0.0.1"
    status, headers, body = get(server)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"# HELP" in body


def test_with_a_token_only_the_right_bearer_token_gets_the_metrics(tmp_path: Path, started: list[Any]) -> None:
    metrics.task_retried("score")  # a worker metric to find in the scrape
    server = metrics.serve_for(settings_of(tmp_path, metrics_token="scrape-me"))
    started.append(server)
    for token in (None, "wrong", "scrape-me-too", "", "SCRAPE-ME"):
        status, headers, body = get(server, token)
        assert status == 401, token
        assert headers["Content-Type"] == "application/json"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        error = json.loads(body)["error"]
        assert error["code"] == "unauthorized" and error["field"] == "Authorization"
        assert "QUIRKSCOPE_METRICS_TOKEN" in error["message"] and b"scrape-me" not in body
    port = server.server_address[1]
    basic = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Basic scrape-me"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(basic, timeout=10)
    assert info.value.code == 401
    status, _, body = get(server, "scrape-me")
    assert status == 200 and b"quirkscope_task_retries_total" in body


def test_a_non_loopback_address_without_token_or_public_is_refused(tmp_path: Path, started: list[Any],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    for addr in ("0.0.0.0", "::"):
        with caplog.at_level(logging.ERROR, logger="workers.tasks.metrics_http"):
            server = metrics.serve_for(settings_of(tmp_path, worker_metrics_addr=addr))
        started.append(server)
        assert server is None
        assert f"not serving worker metrics on {addr}" in caplog.text and "QUIRKSCOPE_METRICS_TOKEN" in caplog.text
        caplog.clear()


def test_a_non_loopback_address_with_the_token_serves_behind_it(tmp_path: Path, started: list[Any]) -> None:
    server = metrics.serve_for(settings_of(tmp_path, worker_metrics_addr="0.0.0.0", metrics_token="scrape-me"))
    started.append(server)
    assert server is not None and server.server_address[0] == "0.0.0.0"
    assert get(server)[0] == 401
    assert get(server, "scrape-me")[0] == 200


def test_metrics_public_reopens_a_non_loopback_address_to_anyone(tmp_path: Path, started: list[Any]) -> None:
    for token in ("", "scrape-me"):  # public wins over the token, as on the API's /metrics
        server = metrics.serve_for(settings_of(tmp_path, worker_metrics_addr="0.0.0.0", metrics_public="1",
                                               metrics_token=token))
        started.append(server)
        assert server is not None and server.server_address[0] == "0.0.0.0"
        assert get(server)[0] == 200


def test_worker_cli_takes_a_metrics_address_and_refuses_a_bad_one(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import build_parser

    args = build_parser().parse_args(["worker", "-Q", "cpu", "--metrics-port", "9100", "--metrics-addr", "0.0.0.0"])
    assert args.metrics_addr == "0.0.0.0"
    assert build_parser().parse_args(["worker", "--metrics-port", "9100"]).metrics_addr is None
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["worker", "--metrics-addr", "everywhere"])
    assert info.value.code == 2 and "IP address" in capsys.readouterr().err
