"""The ready-to-copy CI pipelines under deploy/ci/ validate against the published schemas (SchemaStore's GitHub
workflow and GitLab CI schemas, vendored inside the check-jsonschema package: no download), and call the gate the
way its CLI takes it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINES = [(p, "vendor.github-workflows") for p in sorted((REPO / "deploy/ci/github").glob("*.yml"))] + \
            [(p, "vendor.gitlab-ci") for p in sorted((REPO / "deploy/ci/gitlab").glob("*.yml"))]


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=120)


def test_there_are_server_and_embedded_pipelines_for_github_and_gitlab() -> None:
    texts = {p.relative_to(REPO).as_posix(): p.read_text() for p, _ in PIPELINES}
    github = [t for name, t in texts.items() if name.startswith("deploy/ci/github/")]
    gitlab = [t for name, t in texts.items() if name.startswith("deploy/ci/gitlab/")]
    assert any("--server" in t for t in github) and any("--embedded" in t for t in github)
    assert any("--server" in t for t in gitlab) and any("--embedded" in t for t in gitlab)


@pytest.mark.parametrize("path, schema", PIPELINES, ids=[p.name for p, _ in PIPELINES])
def test_pipeline_validates_against_its_published_schema(path: Path, schema: str) -> None:
    result = check_jsonschema(schema, path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path, schema, key", [(PIPELINES[0][0], PIPELINES[0][1], "runs-on:"),
                                              (PIPELINES[-1][0], PIPELINES[-1][1], "timeout: 90m")],
                         ids=["github", "gitlab"])
def test_the_schema_check_catches_a_broken_pipeline(tmp_path: Path, path: Path, schema: str, key: str) -> None:
    broken = tmp_path / path.name
    broken.write_text(path.read_text().replace(key, key.replace(":", "_typo:"), 1))
    assert check_jsonschema(schema, broken).returncode != 0


def gate_commands(value) -> list[str]:  # type: ignore[no-untyped-def]
    """Every string of a loaded YAML document that runs ``quirkscope gate``."""
    if isinstance(value, str):
        return [value] if "quirkscope gate" in value else []
    if isinstance(value, dict):
        return [c for v in value.values() for c in gate_commands(v)]
    if isinstance(value, list):
        return [c for v in value for c in gate_commands(v)]
    return []


@pytest.mark.parametrize("path", [p for p, _ in PIPELINES], ids=[p.name for p, _ in PIPELINES])
def test_pipeline_gate_commands_parse_with_the_cli(path: Path) -> None:
    """Every ``quirkscope gate`` command of the pipelines is accepted by the CLI's argument parser."""
    import shlex

    from ruamel.yaml import YAML

    from service.cli import build_parser

    commands = gate_commands(YAML(typ="safe").load(path.read_text()))
    assert commands
    for command in commands:
        argv = shlex.split(command.split("quirkscope gate", 1)[1])
        argv = [a.replace("${{ vars.QUIRKSCOPE_URL }}", "http://q").replace("$QUIRKSCOPE_URL", "http://q")
                for a in argv]
        args = build_parser().parse_args(["gate", *argv])
        assert args.model and args.confusion and args.junit and args.sarif
