"""The bounded load test (tests/benchmarks/load.py) as a test: 50 concurrent audit submissions and 500 concurrent
report reads against gunicorn + Redis + PostgreSQL + worker processes on loopback. Pins the outcome, not the
timings (those are printed, and recorded in docs/reliability.md): no request fails, every audit completes."""
from __future__ import annotations

import pytest

from tests.service.conftest import PG_URL, REDIS_URL

pytestmark = pytest.mark.reliability


def test_fifty_concurrent_submissions_and_five_hundred_concurrent_reads_all_succeed_and_every_audit_completes(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gunicorn")
    if not (PG_URL and REDIS_URL):
        pytest.skip("needs QUIRKSCOPE_TEST_DATABASE_URL and QUIRKSCOPE_TEST_REDIS_URL (tests/service/start_servers.sh)")
    from tests.benchmarks.load import print_figures, run

    figures = run(50, 500, deadline_s=900)
    with capsys.disabled():
        print_figures(figures)
    assert figures["submissions"]["errors"] == 0, figures["submissions"]["error_samples"]
    assert figures["reads"]["errors"] == 0, figures["reads"]["error_samples"]
    assert figures["audits"] == {**figures["audits"], "submitted": 50, "done": 50, "failed": 0, "unfinished": 0}
