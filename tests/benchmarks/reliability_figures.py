"""Regenerates the figures of docs/reliability.md: runs the hostile-input corpus (HTTP and CLI), the security
tests, the schema fuzzer, the fault tests and the load test, and prints their tables as Markdown; ``--write
docs/reliability.md`` replaces the block between ``<!-- figures:start -->`` and ``<!-- figures:end -->``.

    python tests/benchmarks/reliability_figures.py [--only 1,2,3,4,5] [--fuzz-examples 100] [--skip-faults]
                        [--skip-load] [--load-json earlier-load.json] [--write docs/reliability.md]

The integration parts need QUIRKSCOPE_TEST_DATABASE_URL and QUIRKSCOPE_TEST_REDIS_URL (tests/service/
start_servers.sh); without them they skip, and the tables say so."""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

FAULTS = {  # test name (without parameters) -> (fault, what the test checks happened)
    "test_task_whose_worker_process_died_is_redelivered_and_completes":
        ("a task's worker process dies (os._exit mid-task)", "the broker redelivers it; it completes on attempt 2"),
    "test_task_that_kills_its_worker_every_time_fails_after_max_attempts":
        ("a task kills its worker on every attempt", "failed after 3 attempts, with the reason"),
    "test_work_of_a_killed_worker_is_reenqueued_by_the_reaper":
        ("the GPU-queue worker killed with SIGKILL (parent and child)", "the reaper re-enqueues it; completes"),
    "test_a_message_lost_between_fetch_and_claim_at_every_stage_is_sent_again":
        ("one message lost between fetch and claim at every stage (start, advance, visualise, evaluate, score, "
         "report, finalize)", "the reaper re-sends each; the audit completes"),
    "test_a_model_that_returns_nan_or_raises_mid_audit_fails_its_audit_with_the_reason":
        ("a model that returns NaN / raises mid-audit (beside a good audit)",
         "those audits fail with model_output_invalid / the RuntimeError; the good one completes"),
    "test_a_full_disk_under_the_artifact_store_fails_or_retries_the_audit_and_leaves_no_partial_files":
        ("artifact writes fail with ENOSPC (always / the first two)",
         "retried, then failed with 'No space left on device' / completes; no partial files"),
    "test_redis_restarted_during_an_audit_loses_no_audit":
        ("Redis (no persistence) restarted during two audits", "queued messages lost, re-sent; both complete"),
    "test_postgresql_unreachable_for_ten_seconds_during_audits_loses_no_audit":
        ("PostgreSQL unreachable for 10 s during two audits", "API answers 503; both audits complete"),
    "test_the_api_killed_during_an_upload_and_during_an_audit_loses_nothing":
        ("the API killed mid-upload, between storing an audit and enqueuing it, and while it runs",
         "no partial model; the reaper starts the audit; it completes"),
}


def pytest_junit(paths: list[str], env: dict[str, str] | None = None, extra: list[str] = ()) -> list[dict]:  # type: ignore[assignment]
    """Run pytest on ``paths``; one dict per test case: name, params, outcome, seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        *extra, *paths], cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        cases = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name", "")
            base, _, params = name.partition("[")
            outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                       else "skipped" if case.find("skipped") is not None else "passed")
            cases.append({"name": base, "params": params.rstrip("]"), "outcome": outcome,
                          "seconds": float(case.get("time", 0)), "file": case.get("classname", "")})
        return cases


def category(case_id: str) -> str:
    head = case_id.split("-")[0]
    return {"json": "bad JSON / content type", "content": "bad JSON / content type", "model": "ids and body fields",
            "baseline": "ids and body fields", "audit": "ids and body fields", "review": "review body",
            "query": "query parameters and path ids", "path": "query parameters and path ids",
            "delete": "query parameters and path ids", "artifact": "artifact keys",
            "upload": "hostile bundles and uploads", "confusion": "confusion matrices", "options": "audit options",
            "option": "audit options", "bundle": "hostile bundles and uploads", "visualize": "other commands",
            "export": "other commands", "token": "other commands"}.get(head, head)


def hostile_table() -> list[str]:
    cases = pytest_junit(["tests/service/test_hostile_input.py", "tests/test_hostile_cli.py"])
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for c in cases:
        if "streaming" in c["name"] or "vanishes" in c["name"]:
            rows[(f"HTTP ({c['params']}), real server", "uploads cut off while streaming")][c["outcome"]] += 1
            continue
        if not c["params"]:
            continue
        if "cli" in c["file"]:
            rows[("CLI", category(c["params"]))][c["outcome"]] += 1
        else:
            db, _, case_id = c["params"].partition("-")
            rows[(f"HTTP ({db})", category(case_id))][c["outcome"]] += 1
    out = ["| channel | kind of input | cases | answered as expected (4xx / exit 2, message names it, nothing "
           "changed) | failed | skipped |", "|---|---|---:|---:|---:|---:|"]
    for (channel, kind), n in sorted(rows.items()):
        out.append(f"| {channel} | {kind} | {sum(n.values())} | {n['passed']} | {n['failed']} | {n['skipped']} |")
    corpus = [c for c in cases if c["params"] and not ("streaming" in c["name"] or "vanishes" in c["name"])]
    total = collections.Counter(c["outcome"] for c in corpus)
    distinct = len({("cli", c["params"]) if "cli" in c["file"] else ("http", c["params"].partition("-")[2])
                    for c in corpus})
    out.append(f"| **all** | {distinct} distinct cases | {sum(total.values())} | {total['passed']} | "
               f"{total['failed']} | {total['skipped']} |")
    return out


def security_table() -> list[str]:
    cases = pytest_junit(["tests/service/test_security.py"])
    out = ["| property (test) | runs | passed | failed | skipped |", "|---|---:|---:|---:|---:|"]
    grouped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in cases:
        grouped[c["name"].removeprefix("test_").replace("_", " ")][c["outcome"]] += 1
    for name, n in grouped.items():
        out.append(f"| {name} | {sum(n.values())} | {n['passed']} | {n['failed']} | {n['skipped']} |")
    return out


def fuzz_table(examples: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fuzz.log"
        cases = pytest_junit(["tests/service/test_openapi_fuzz.py"],
                             env={"QUIRKSCOPE_FUZZ_EXAMPLES": str(examples), "QUIRKSCOPE_FUZZ_LOG": str(log)})
        lines = log.read_text().splitlines() if log.exists() else []
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in lines:
        method, path, status = line.rsplit(" ", 2)
        per_op[f"{method} {path}"][status] += 1
    outcomes = {c["params"]: c["outcome"] for c in cases}
    out = [f"max {examples} examples per operation (hypothesis, derandomized); checks: no 5xx, status code, "
           "content type and body documented", "",
           "| operation | requests | answers (status: count) | 5xx | checks |", "|---|---:|---|---:|---|"]
    for op, n in sorted(per_op.items()):
        answers = ", ".join(f"{s}: {k}" for s, k in sorted(n.items()))
        five = sum(k for s, k in n.items() if s.startswith("5"))
        outcome = next((o for p, o in outcomes.items() if op in p), "?")
        out.append(f"| `{op}` | {sum(n.values())} | {answers} | {five} | {outcome} |")
    total = sum(sum(n.values()) for n in per_op.values())
    fives = sum(k for n in per_op.values() for s, k in n.items() if s.startswith("5"))
    failed = sum(1 for o in outcomes.values() if o == "failed")
    out.append(f"| **{len(per_op)} operations** | {total} | | {fives} | {failed} failed |")
    return out


def faults_table() -> list[str]:
    cases = pytest_junit(["tests/service/test_worker_recovery.py", "tests/service/test_faults.py"])
    out = ["| fault | stack | what happened | audits lost | duplicate rows | result | s |",
           "|---|---|---|---:|---:|---|---:|"]
    for c in cases:
        fault, what = FAULTS.get(c["name"], (c["name"], ""))
        private = "redis" in c["name"] or "postgresql" in c["name"]
        stack = c["params"] or ("private redis-server / proxy to PostgreSQL" if private else "-")
        ok = c["outcome"] == "passed"
        out.append(f"| {fault} | {stack or '-'} | {what if ok else '(see the test)'} | {'0' if ok else '?'} | "
                   f"{'0' if ok else '?'} | {c['outcome']} | {c['seconds']:.0f} |")
    return out


def load_table(figures: dict | None) -> list[str]:
    if figures is None:
        return ["(not run)"]
    out = [("| phase | requests | errors | requests/s | p50 ms | p99 ms | CPU ms per request: client / gunicorn / "
            "postgres |"), "|---|---:|---:|---:|---:|---:|---|"]
    for name, key in (("50 concurrent audit submissions", "submissions"), ("500 concurrent report reads "
                                                                          "(`GET /audits/{id}/pairs`)", "reads")):
        f = figures[key]
        cpu = " / ".join(str(f.get(f"{who}_cpu_ms_per_request") if f.get(f"{who}_cpu_ms_per_request") is not None
                             else "-") for who in ("client", "server", "database"))
        out.append(f"| {name} | {f['requests']} | {f['errors']} | {f['requests_per_s']} | {f['p50_ms']} | "
                   f"{f['p99_ms']} | {cpu} |")
    a = figures["audits"]
    out += ["", f"Audits: {a['submitted']} submitted, {a['done']} done, {a['failed']} failed, {a['unfinished']} "
                f"unfinished, all ended after {a['processing_s']} s ({a['audits_per_min']} audits/min, one `gpu` "
                "and one `cpu` worker process)."]
    return out


SECTION_ORDER = ["### 1. Hostile input", "### 2. Security", "### 3. Fuzzing the OpenAPI document", "### 4. Faults",
                 "### 5. Load"]


def previous_sections(block: str) -> dict[str, list[str]]:
    """The ``### N. ...`` sections of an earlier figures block, header -> lines (blank edges dropped)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in block.strip().splitlines():
        if line.startswith("### "):
            current = line
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {h: _strip_blank(b) for h, b in out.items()}


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz-examples", type=int, default=100)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--load-json", type=Path, default=None, help="figures of an earlier load.py --json run")
    parser.add_argument("--only", default="1,2,3,4,5",
                        help="sections to (re)run: 1 hostile input, 2 security, 3 fuzzing, 4 faults, 5 load; with "
                             "--write the others keep their earlier figures")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)

    sections: dict[str, list[str]] = {}
    want = set(args.only.split(","))
    if "1" in want:
        sections["### 1. Hostile input"] = hostile_table()
    if "2" in want:
        sections["### 2. Security"] = security_table()
    if "3" in want:
        sections["### 3. Fuzzing the OpenAPI document"] = fuzz_table(args.fuzz_examples)
    if "4" in want and not args.skip_faults:
        sections["### 4. Faults"] = faults_table()
    if "5" not in want:
        pass
    elif args.load_json:
        sections["### 5. Load"] = load_table(json.loads(args.load_json.read_text()))
    elif not args.skip_load:
        from tests.benchmarks.load import run

        sections["### 5. Load"] = load_table(run(50, 500, deadline_s=900))
    stamp = (f"_Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by "
             f"`tests/benchmarks/reliability_figures.py` on {os.cpu_count()} CPU cores ({platform.machine()}), "
             f"Python {platform.python_version()}._")
    sections = {head: [stamp, "", *body] for head, body in sections.items()}
    text = "\n".join(line for head, body in sections.items() for line in ["", head, "", *body])
    print(text)
    if args.write:
        doc = args.write.read_text()
        if START not in doc or END not in doc:
            raise SystemExit(f"{args.write} has no {START} ... {END} block")
        head, rest = doc.split(START, 1)
        old_block, tail = rest.split(END, 1)
        kept = previous_sections(old_block)  # sections not rerun keep their figures and their stamp
        merged = {h: sections.get(h, kept.get(h, [])) for h in SECTION_ORDER if h in sections or h in kept}
        lines = [line for h, body in merged.items() for line in ["", h, "", *body]]
        args.write.write_text(head + START + "\n" + "\n".join(lines).strip("\n") + "\n" + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
