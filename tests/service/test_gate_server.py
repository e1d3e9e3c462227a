"""``quirkscope gate --server`` against a live service on loopback (real HTTP, separate gpu and cpu worker
processes; Redis + PostgreSQL when the test servers are up, else SQLite + the filesystem broker): the first release
passes with warnings, the second -- one more planted shortcut -- fails naming it, a reviewer dismisses it through
the API and the gate passes (reusing the audit, the bundle not uploaded again); a timeout is exit 3, a baseline that
does not exist or a refused token exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from tests.reference_fixtures import GATE_AUDIT
from tests.service.conftest import PG_URL, REDIS_URL, fresh_postgres_schema
from tests.service.stack import running_stack

pytestmark = pytest.mark.slow

CONFIG = """\
[gate]
timeout = 600
[gate.rules]
new_findings = { action = "fail", min_severity = "medium", codes = ["LOCALIZED_CUE"] }
confirmed_findings = "fail"
localized_cue = "warn"
"""


def stack_env(tmp_path: Path) -> dict[str, str]:
    """The production topology when its servers are up (tests/service/start_servers.sh), else the embedded one."""
    if not (REDIS_URL and PG_URL):
        return {}
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    return {"QUIRKSCOPE_BROKER_URL": REDIS_URL, "QUIRKSCOPE_RESULT_BACKEND": REDIS_URL,
            "QUIRKSCOPE_DATABASE_URL": fresh_postgres_schema(PG_URL),
            "QUIRKSCOPE_ARTIFACTS_URL": f"file://{tmp_path / 'shared-artifacts'}"}


def test_gate_against_a_live_service(capsys, tmp_path: Path, releases, monkeypatch) -> None:
    from junitparser import Failure, JUnitXml

    (v1_bundle, v1_confusion), (v2_bundle, v2_confusion) = releases["v1"], releases["v2"]
    extra = releases["extra"]
    config = tmp_path / "quirkscope.toml"
    config.write_text(CONFIG)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    with running_stack(tmp_path / "home", stack_env(tmp_path)) as stack:
        monkeypatch.setenv("QUIRKSCOPE_TOKEN", stack.token)

        def gate(bundle: Path, confusion: Path, *argv: str) -> tuple[int, str, str]:
            code = main(["gate", "--server", stack.base_url, "--model", str(bundle), "--confusion", str(confusion),
                         "--config", str(config), *GATE_AUDIT, *argv])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        # v1: the first release; its cues are known quirks -> warnings only
        code, out, err = gate(v1_bundle, v1_confusion, "--baseline", "latest", "--rule", "new_findings=warn")
        assert code == 0, out + err
        assert "uploaded" in out and "baseline: none" in out and "gate PASSED" in out

        # v2 against the latest audit of another bundle of the model (v1): the planted cue is new and fails
        code, out, err = gate(v2_bundle, v2_confusion, "--junit", str(tmp_path / "junit.xml"),
                              "--json", str(tmp_path / "gate.json"), "--report", str(tmp_path / "report"))
        assert code == 1, out + err
        doc = json.loads((tmp_path / "gate.json").read_text())
        assert doc["baseline"]["model"]["version"] == "seed0" and doc["candidate"]["model"]["version"] == "v2"
        failing = doc["failures"]
        assert failing and all(f["code"] == "LOCALIZED_CUE" for f in failing)
        planted = [f for f in failing if f["stream"] == extra.stream and f"about {extra.class_name}" in f["message"]]
        assert planted, failing
        assert doc["report_url"] == f"{stack.base_url}/audits/{doc['candidate']['id']}"
        suite = next(iter(JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
        assert any(isinstance(r, Failure) and doc["report_url"] in r.text for case in suite for r in case.result)
        assert (tmp_path / "report" / "index.html").is_file()
        assert json.loads((tmp_path / "report" / "report.json").read_text())["audit"]["id"] == doc["candidate"]["id"]

        # a reviewer dismisses the failing findings on v2's audit; the gate reuses that audit and passes
        new = {f["fingerprint"]: f for f in doc["comparison"]["findings"]["new"]}
        for failure in failing:
            status, _ = stack.request("POST", f"/api/v1/flags/{new[failure['fingerprint']]['flag_id']}/review",
                                      {"verdict": "dismissed", "note": "the corner logo is in the product"})
            assert status == 200
        code, out, err = gate(v2_bundle, v2_confusion, "--json", str(tmp_path / "again.json"))
        assert code == 0, out + err
        assert "already" in out and "uploaded" not in out and f"reusing audit {doc['candidate']['id']}" in out
        again = json.loads((tmp_path / "again.json").read_text())
        assert all(f["decision"]["verdict"] == "dismissed" for f in again["comparison"]["findings"]["new"]
                   if f["code"] == "LOCALIZED_CUE")

        # could not run: an audit that does not finish in time -> 3 (cancelled afterwards)
        code, out, err = gate(v2_bundle, v2_confusion, "--fresh", "--timeout", "0.5")
        assert code == 3 and len(err.strip().splitlines()) == 1 and "did not finish within 0.5s" in err
        _, audits = stack.request("GET", "/api/v1/audits?status=running")
        _, queued = stack.request("GET", "/api/v1/audits?status=queued")
        for audit in audits["audits"] + queued["audits"]:
            stack.request("DELETE", f"/api/v1/audits/{audit['id']}")

        # bad input: a baseline that does not exist, a token the server refuses -> 2, one line
        code, out, err = gate(v2_bundle, v2_confusion, "--baseline", "quirkscope-reference-flatten@v9")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "no finished audit of quirkscope-reference-flatten version v9" in err
        code, out, err = gate(v2_bundle, v2_confusion, "--token", "qs_wrong")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "refused the token" in err
