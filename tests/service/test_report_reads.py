"""Report reads (``GET /audits/<id>/pairs`` and ``/pairs/<rank>``): a fixed number of SQL statements whatever the
size of the report, the same JSON as the ORM rows give, fresh data after a review or a worker's change, the token
and its project checked on every read, artifact links equal to ``url_for``'s, and conditional GETs (ETag / 304)."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlalchemy import select, update

from db.models import ApiToken, Audit, Flag, WorkItem
from tests.fixtures_report import build_sample_report
from tests.service.conftest import auth
from tests.service.query_count import counted_queries
from tests.service.report_rows_fixture import store_report

# token + project (1), audit + model, pairs, scores, flags, reviews (5); SQLite adds its explicit BEGIN
MAX_READ_STATEMENTS = 7
# /pairs reads the report's version first (1 more); again, with the version unchanged: token, version (+ BEGIN)
MAX_FIRST_REPORT_STATEMENTS, MAX_CACHED_REPORT_STATEMENTS = MAX_READ_STATEMENTS + 1, 3


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_sample_report(tmp_path_factory.mktemp("sample"))


def bigger(report: dict, times: int) -> dict:
    """``report`` with its pairs repeated ``times`` times (ranks renumbered): more pairs, flags and reviews."""
    out = copy.deepcopy(report)
    out["pairs"] = [{**copy.deepcopy(p), "rank": i + 1} for i, p in enumerate(report["pairs"] * times)]
    return out


def test_a_read_runs_a_fixed_number_of_statements_whatever_the_report_size(app, client, make_token, db_session,
                                                                         sample_report) -> None:
    token = make_token()
    small, large = store_report(db_session, sample_report).id, store_report(db_session, bigger(sample_report, 4)).id
    engine = app.extensions["quirkscope_db"].engine
    counts = {}
    for audit_id in (small, large):
        for read in ("first", "again"):
            with counted_queries(engine) as statements:
                resp = client.get(f"/api/v1/audits/{audit_id}/pairs", headers=auth(token))
            assert resp.status_code == 200
            counts[len(resp.json["pairs"]), read] = len(statements)
    assert counts[3, "first"] == counts[12, "first"] <= MAX_FIRST_REPORT_STATEMENTS, counts
    assert counts[3, "again"] == counts[12, "again"] <= MAX_CACHED_REPORT_STATEMENTS, counts
    with counted_queries(engine) as statements:
        assert client.get(f"/api/v1/audits/{large}/pairs/7", headers=auth(token)).json["rank"] == 7
    assert len(statements) <= MAX_READ_STATEMENTS


def test_the_read_gives_the_report_the_orm_rows_give(app, client, make_token, db_session, sample_report) -> None:
    from service.api.report_reads import REPORT_ROWS, artifact_link
    from workers.audit.report_rows import build_report

    token = make_token()
    audit_id = store_report(db_session, sample_report).id
    served = client.get(f"/api/v1/audits/{audit_id}/pairs", headers=auth(token)).json
    with app.test_request_context():
        session = app.extensions["quirkscope_db"].sessionmaker()
        audit = session.scalars(select(Audit).where(Audit.id == audit_id).options(*REPORT_ROWS)).one()
        expected = app.json.loads(app.json.dumps(build_report(audit, artifact_link(audit_id))))
        session.close()
    assert served == expected
    assert [len(p["flags"]) for p in served["pairs"]] == [len(p["flags"]) for p in sample_report["pairs"]]
    assert [f["review"]["verdict"] for f in served["pairs"][0]["flags"] if f["review"]] == ["confirmed"]
    assert client.get(f"/api/v1/audits/{audit_id}/pairs/2", headers=auth(token)).json == served["pairs"][1]


def test_reads_see_a_review_and_a_workers_change_at_once(client, make_token, db_session, sample_report) -> None:
    token = make_token()
    audit_id = store_report(db_session, sample_report).id
    url = f"/api/v1/audits/{audit_id}/pairs"
    first = client.get(url, headers=auth(token))
    flag_id = first.json["pairs"][1]["flags"][0]["id"]
    assert first.json["pairs"][1]["flags"][0]["review"] is None
    assert client.post(f"/api/v1/flags/{flag_id}/review", headers=auth(token),
                       json={"verdict": "dismissed", "note": "fine"}).status_code == 200
    second = client.get(url, headers=auth(token))
    assert second.json["pairs"][1]["flags"][0]["review"]["verdict"] == "dismissed"
    assert second.headers["ETag"] != first.headers["ETag"]
    db_session.execute(update(Flag).where(Flag.id == flag_id).values(severity="low", message="rescored"))
    db_session.execute(update(Audit).where(Audit.id == audit_id).values(progress=0.5, status="running"))
    db_session.commit()
    third = client.get(url, headers=auth(token)).json
    assert (third["pairs"][1]["flags"][0]["severity"], third["pairs"][1]["flags"][0]["message"]) == ("low", "rescored")
    assert (third["audit"]["status"], third["audit"]["progress"]) == ("running", 0.5)


def test_every_read_checks_the_token_and_its_project(app, client, make_token, db_session, sample_report) -> None:
    token, other = make_token("alpha"), make_token("beta")
    audit_id = store_report(db_session, sample_report, project="alpha").id
    for url in (f"/api/v1/audits/{audit_id}/pairs", f"/api/v1/audits/{audit_id}/pairs/1"):
        assert client.get(url, headers=auth(token)).status_code == 200
        assert client.get(url, headers=auth(other)).status_code == 404
        assert client.get(url).status_code == 401
    db_session.execute(update(ApiToken).where(ApiToken.project_id != None)  # noqa: E711 - SQL IS NOT NULL
                       .values(revoked_at=dt.datetime.now(dt.timezone.utc)))
    db_session.commit()
    assert client.get(f"/api/v1/audits/{audit_id}/pairs", headers=auth(token)).status_code == 401


def test_artifact_links_are_those_url_for_builds(app) -> None:
    from flask import url_for

    from service.api.report_reads import artifact_link

    keys = ["artifacts/c00/appearance/level0.gif", "a b/ü?x=1#frag.png", "%2e%2e/x.npy", "x;y,z@w/'q'.mp4"]
    with app.test_request_context(environ_overrides={"SCRIPT_NAME": "/prefix"}):
        link = artifact_link(12)
        for key in keys:
            assert link(key) == url_for("api.get_artifact", audit_id=12, key=key), key


def test_a_read_answers_304_to_its_etag_and_200_once_the_report_changes(client, make_token, db_session,
                                                                        sample_report) -> None:
    token = make_token()
    audit_id = store_report(db_session, sample_report).id
    url = f"/api/v1/audits/{audit_id}/pairs"
    first = client.get(url, headers=auth(token))
    etag = first.headers["ETag"]
    assert etag and "private" in first.headers["Cache-Control"] and "no-cache" in first.headers["Cache-Control"]
    again = client.get(url, headers={**auth(token), "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 401  # the ETag is no credential
    db_session.execute(update(Audit).where(Audit.id == audit_id).values(progress=0.25))
    db_session.commit()
    changed = client.get(url, headers={**auth(token), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_a_cached_report_shows_a_review_made_through_another_app_at_the_next_read(app, settings, client, make_token,
                                                                                  db_session, sample_report) -> None:
    from service.app import create_app

    other_app = create_app({"TESTING": True}, settings=settings)  # another process's app: its own cache, one DB
    token = make_token()
    audit_id = store_report(db_session, sample_report).id
    url = f"/api/v1/audits/{audit_id}/pairs"
    first = client.get(url, headers=auth(token))
    with counted_queries(app.extensions["quirkscope_db"].engine) as statements:
        cached = client.get(url, headers=auth(token))
    assert len(statements) <= MAX_CACHED_REPORT_STATEMENTS and cached.data == first.data  # served from the cache
    flag_id = first.json["pairs"][1]["flags"][0]["id"]
    assert first.json["pairs"][1]["flags"][0]["review"] is None
    reviewed = other_app.test_client().post(f"/api/v1/flags/{flag_id}/review", headers=auth(token),
                                            json={"verdict": "confirmed", "note": "a watermark"})
    assert reviewed.status_code == 200
    after = client.get(url, headers={**auth(token), "If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != first.headers["ETag"]
    assert after.json["pairs"][1]["flags"][0]["review"]["verdict"] == "confirmed"
    db_session.execute(update(ApiToken).values(revoked_at=dt.datetime.now(dt.UTC)))
    db_session.commit()
    assert client.get(url, headers=auth(token)).status_code == 401  # a cached body is no credential either
    other_app.extensions["quirkscope_db"].engine.dispose()


def test_a_cached_report_is_gone_with_its_audit(client, make_token, db_session, sample_report) -> None:
    token = make_token()
    audit_id = store_report(db_session, sample_report).id
    url = f"/api/v1/audits/{audit_id}/pairs"
    assert client.get(url, headers=auth(token)).status_code == 200
    assert client.get(url, headers=auth(token)).status_code == 200
    assert client.delete(f"/api/v1/audits/{audit_id}", headers=auth(token)).status_code == 204
    gone = client.get(url, headers=auth(token))
    assert gone.status_code == 404 and gone.json["error"]["field"] == "audit_id"


def test_a_finished_audit_whose_task_still_runs_is_read_afresh(client, make_token, db_session, sample_report) -> None:
    token = make_token()
    audit = store_report(db_session, sample_report)
    db_session.execute(update(Audit).where(Audit.id == audit.id).values(status="cancelled"))
    db_session.add(WorkItem(audit_id=audit.id, kind="score", key=2, status="running"))
    db_session.commit()
    url = f"/api/v1/audits/{audit.id}/pairs"
    flag_id = client.get(url, headers=auth(token)).json["pairs"][1]["flags"][0]["id"]
    # the task finishing after the cancel rewrites the flag in place: no count, id or audit column changes
    db_session.execute(update(Flag).where(Flag.id == flag_id).values(message="rescored late"))
    db_session.commit()
    assert client.get(url, headers=auth(token)).json["pairs"][1]["flags"][0]["message"] == "rescored late"


def test_a_status_poll_and_the_audit_list_are_one_statement_that_leaves_the_confusion_matrix_and_plan_unread(
        app, client, make_token, db_session, sample_report) -> None:
    token = make_token()
    audit_id = store_report(db_session, bigger(sample_report, 4)).id
    engine = app.extensions["quirkscope_db"].engine
    for url in (f"/api/v1/audits/{audit_id}", "/api/v1/audits"):
        with counted_queries(engine) as statements:
            resp = client.get(url, headers=auth(token))
        assert resp.status_code == 200
        reads = [s for s in statements if "audits" in s and s.lstrip().upper().startswith("SELECT")
                 and "api_tokens" not in s]
        assert len(reads) == 1, statements
        assert "audits.confusion" not in reads[0] and "audits.plan" not in reads[0]
    status = client.get(f"/api/v1/audits/{audit_id}", headers=auth(token)).json
    listed = client.get("/api/v1/audits", headers=auth(token)).json["audits"]
    assert status["n_pairs"] == 12 and [a for a in listed if a["id"] == audit_id] == [status]
