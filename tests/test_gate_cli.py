"""``quirkscope gate``: bad input ends with exit code 2 and one line naming the problem, a server that cannot be
reached with 3, before any audit runs. (The audits themselves: tests/test_gate_embedded.py and
tests/service/test_gate_server.py.)"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from service.cli import main


def gate(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(["gate", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[str, str]:
    model = tmp_path / "model.zip"
    model.write_bytes(b"not read before the server answers")
    confusion = tmp_path / "confusion.json"
    confusion.write_text(json.dumps({"classes": ["a", "b"], "matrix": [[1, 0], [0, 1]]}))
    return str(model), str(confusion)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_documents_the_exit_codes_and_the_rules(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gate", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for text in ("0  the gate passed", "1  the gate failed", "2  bad usage or input", "3  the gate could not run",
                 "new_findings", "confirmed_findings", "localized_cue", "confusion_rate", "QUIRKSCOPE_TOKEN"):
        assert text in out, text


def test_unknown_rule_exits_2_naming_it(capsys, inputs) -> None:
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--embedded", "--rule", "shiny=fail")
    assert code == 2 and len(err) == 1 and "unknown rule 'shiny'" in err[0]


def test_malformed_config_exits_2_naming_file_and_key(capsys, inputs, tmp_path, monkeypatch) -> None:
    (tmp_path / "quirkscope.toml").write_text('[gate.rules]\nlocalized_cue = "sometimes"\n')
    monkeypatch.chdir(tmp_path)
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--embedded")
    assert code == 2 and len(err) == 1 and "quirkscope.toml" in err[0] and "gate.rules.localized_cue" in err[0]


def test_bad_audit_option_in_config_exits_2(capsys, inputs, tmp_path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[gate.audit]\nsteps = 0\n")
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--embedded", "--config", str(config))
    assert code == 2 and len(err) == 1 and "options.steps" in err[0]


def test_embedded_baseline_must_be_a_report_file(capsys, inputs, tmp_path) -> None:
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--embedded", "--baseline", "latest")
    assert code == 2 and len(err) == 1 and "report JSON file" in err[0]
    bad = tmp_path / "baseline.json"
    bad.write_text('{"not": "a report"}')
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--embedded", "--baseline", str(bad))
    assert code == 2 and len(err) == 1 and "is not an audit report" in err[0]


def test_unreachable_server_exits_3_naming_it(capsys, inputs) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--server", url, "--token", "t")
    assert code == 3 and len(err) == 1 and f"cannot reach the QuirkScope server at {url}" in err[0]


def test_server_without_token_or_with_a_bad_url_exits_2(capsys, inputs, monkeypatch) -> None:
    monkeypatch.delenv("QUIRKSCOPE_TOKEN", raising=False)
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--server", "http://127.0.0.1:1")
    assert code == 2 and len(err) == 1 and "QUIRKSCOPE_TOKEN" in err[0]
    code, err = gate(capsys, "--model", inputs[0], "--confusion", inputs[1], "--server", "ftp://x", "--token", "t")
    assert code == 2 and "http(s) URL" in err[0]


def test_embedded_and_server_are_exclusive_and_one_is_required(capsys, inputs) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gate", "--model", inputs[0], "--confusion", inputs[1]])
    assert info.value.code == 2


def test_baseline_of_another_model_exits_2_before_auditing(capsys, tmp_path, reference) -> None:
    from tests.gate_fixtures import report
    from workers.engine.reference.train import write_reference

    bundle, confusion = write_reference(reference, tmp_path / "ref")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(report("1", [], name="someone-elses-model")))
    code, err = gate(capsys, "--model", str(bundle), "--confusion", str(confusion), "--embedded",
                     "--baseline", str(baseline), "--report", str(tmp_path / "r"))
    assert code == 2 and len(err) == 1 and "model 'someone-elses-model'" in err[0]
    assert not (tmp_path / "r").exists()
