"""What one report read costs in-process: the Flask test client against a stored finished audit (the sample report
of ``tests/fixtures_report.py``: three pairs, two streams, flags, a review) on PostgreSQL (or SQLite), timing
``GET /api/v1/audits/<id>/pairs``, the status poll ``GET /api/v1/audits/<id>`` and ``GET /health`` over ``--requests``
calls each and counting the SQL statements one read runs. No gunicorn, no network: the figure is the server's own
cost per read.

    python tests/benchmarks/read_cost.py [--requests 200] [--profile 25]

Uses QUIRKSCOPE_TEST_DATABASE_URL (a fresh schema in it) when set, else a SQLite file in a temporary folder."""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def build_app(tmp: Path):  # type: ignore[no-untyped-def]
    """An app on a fresh database holding one finished sample audit; returns (app, token, audit id)."""
    from db.migrate import upgrade
    from service.app import create_app
    from service.auth import issue_token
    from tests.fixtures_report import build_sample_report
    from tests.service.conftest import fresh_postgres_schema, make_settings
    from tests.service.report_rows_fixture import store_report

    pg = os.environ.get("QUIRKSCOPE_TEST_DATABASE_URL")
    url = fresh_postgres_schema(pg) if pg else f"sqlite:///{tmp / 'quirkscope.db'}"
    upgrade(url)
    app = create_app({"TESTING": True}, settings=make_settings(tmp, url))
    factory = app.extensions["quirkscope_db"].sessionmaker
    token = issue_token(factory(), "alpha", "read,review")
    session = factory()
    audit_id = store_report(session, build_sample_report(tmp / "sample")).id
    session.close()
    return app, token, audit_id


def per_request(client, url: str, headers: dict[str, str], n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Mean wall-clock and CPU milliseconds (this process's CPU: the app's own cost, without the database server's)
    per ``GET url`` over ``n`` calls, after two warm-up calls."""
    for _ in range(2):
        assert client.get(url, headers=headers).status_code == 200
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        resp = client.get(url, headers=headers)
        assert resp.status_code == 200, resp.data[:200]
    return 1000 * (time.perf_counter() - t0) / n, 1000 * (time.process_time() - c0) / n


def main(argv: list[str] | None = None) -> int:
    from tests.service.query_count import counted_queries

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions of the reads")
    parser.add_argument("--sort", default="cumulative", help="the profile's order: cumulative or tottime")
    args = parser.parse_args(argv)
    app, token, audit_id = build_app(Path(tempfile.mkdtemp(prefix="quirkscope-read-cost-")))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    pairs_url = f"/api/v1/audits/{audit_id}/pairs"
    engine = app.extensions["quirkscope_db"].engine
    with counted_queries(engine) as statements:
        body = client.get(pairs_url, headers=headers)
    with counted_queries(engine) as again:  # a finished audit's body is kept: the version and the token only
        client.get(pairs_url, headers=headers)
    status_url = f"/api/v1/audits/{audit_id}"
    with counted_queries(engine) as status_statements:
        client.get(status_url, headers=headers)
    health_ms = per_request(client, "/api/v1/health", headers, args.requests)
    pairs_ms = per_request(client, pairs_url, headers, args.requests)
    status_ms = per_request(client, status_url, headers, args.requests)
    print(f"database: {engine.dialect.name}; report {len(body.data)} bytes, {len(body.json['pairs'])} pairs")
    print(f"GET /pairs : {pairs_ms[0]:7.2f} ms/request ({pairs_ms[1]:.2f} ms CPU) over {args.requests}, "
          f"{len(statements)} SQL statements the first time, {len(again)} after")
    print(f"GET /audits/<id> (status): {status_ms[0]:7.2f} ms/request ({status_ms[1]:.2f} ms CPU) over "
          f"{args.requests}, {len(status_statements)} SQL statements")
    print(f"GET /health: {health_ms[0]:7.2f} ms/request ({health_ms[1]:.2f} ms CPU) over {args.requests}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(per_request, client, pairs_url, headers, args.requests)
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
