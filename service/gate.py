"""``quirkscope gate``: audit a release candidate (in this process with ``--embedded``, or on a server), compare it
with its baseline (the previous release), apply the gate's rules (``workers.audit.gate_rules``, configured in
``quirkscope.toml`` or ``[tool.quirkscope.gate]`` of pyproject.toml, see ``service.gate_config``) and write what CI
shows (``workers.audit.gate_outputs``). The exit code is the decision:

    0  the gate passed (warnings may have been printed)
    1  the gate failed: a rule set to ``fail`` found something (each is printed on one line)
    2  bad usage or input: unknown rule, malformed config, missing or bad bundle / matrix / baseline, a baseline of
       another model, a token the server refuses
    3  the gate could not run: the server was unreachable or failed, the audit failed or timed out
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from workers.engine.errors import InvalidInput, QuirkScopeError, Unavailable

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3
NO_BASELINE = ("none", "")
EPILOG = """exit codes:
  0  the gate passed (warnings may have been printed)
  1  the gate failed: a rule set to fail found something (one line each)
  2  bad usage or input: unknown rule, malformed config, missing or bad bundle/matrix/baseline file,
     a baseline of another model, a token the server refuses
  3  the gate could not run: server unreachable or failing, audit failed or timed out

rules (quirkscope.toml [gate.rules] or pyproject.toml [tool.quirkscope.gate.rules]; each fail|warn|off):
  new_findings        a finding new since the baseline, at or above min_severity (and of codes, when given),
                      not dismissed (default fail, medium, every code)
  confirmed_findings  a finding a reviewer confirmed is still raised (default fail)
  localized_cue       any LOCALIZED_CUE that is not dismissed (default warn)
  confusion_rate      a pair whose confusion rate exceeds max (default off)
"""


@dataclass
class GateRun:
    """What an audit run hands to the gate: the candidate's report, the baseline's (or None), the comparison."""

    candidate: dict[str, Any]
    baseline: dict[str, Any] | None
    comparison: dict[str, Any]
    report_url: str | None = None


def add_gate_parser(sub: Any, positive: Callable[[str], int]) -> None:
    p = sub.add_parser("gate", help="audit a release candidate, compare it with the previous release, pass or fail",
                       description="Audit a release candidate (--embedded: in this process; --server: on a "
                                   "QuirkScope server), compare it with its baseline (the previous release), apply the "
                                   "gate's rules from quirkscope.toml or pyproject.toml, write the CI outputs asked "
                                   "for, and exit with the decision.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the candidate's bundle (.zip)")
    p.add_argument("--confusion", type=Path, required=True, help="its confusion matrix (JSON or CSV)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--embedded", action="store_true", help="audit in this process (no server)")
    where.add_argument("--server", metavar="URL", help="audit on a QuirkScope server, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", default=None, help="API token for --server (default: $QUIRKSCOPE_TOKEN)")
    p.add_argument("--baseline", default=None,
                   help="--server: latest (default: the newest finished audit of another bundle of the model), "
                        "AUDIT_ID or NAME@VERSION; --embedded: a previous report JSON (DIR/report.json of --report); "
                        "none: no baseline, every finding is new")
    p.add_argument("--config", type=Path, default=None,
                   help="gate config (default: ./quirkscope.toml, else [tool.quirkscope.gate] of ./pyproject.toml)")
    p.add_argument("--rule", action="append", default=[], metavar="NAME=ACTION",
                   help="override a rule: new_findings|confirmed_findings|localized_cue|confusion_rate = "
                        "fail|warn|off (repeatable)")
    p.add_argument("--min-severity", choices=("low", "medium", "high"), default=None,
                   help="new_findings: the lowest severity that counts")
    p.add_argument("--max-confusion", type=float, default=None,
                   help="confusion_rate: the highest rate allowed (turns the rule on)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the server's audit (exit 3 past it)")
    p.add_argument("--fresh", action="store_true",
                   help="--server: audit again even when a finished audit of the same bundle, options and matrix "
                        "exists (by default it is reused, with its reviews)")
    for name in ("top-k", "levels", "seeds", "steps"):
        p.add_argument(f"--{name}", type=positive, default=None, help="audit option (overrides [gate.audit])")
    p.add_argument("--pairs", default=None, help="extra pairs to audit: a:b,c:d")
    p.add_argument("--device", default=None, help="--embedded: cpu, cuda, ...")
    p.add_argument("--junit", type=Path, default=None, help="write JUnit XML (a test case per audited pair)")
    p.add_argument("--summary", type=Path, default=None,
                   help="append a Markdown summary (default: $GITHUB_STEP_SUMMARY when set)")
    p.add_argument("--json", type=Path, default=None, help="write the comparison and the decision as JSON")
    p.add_argument("--sarif", type=Path, default=None, help="write SARIF 2.1.0 (fingerprints, baselineState)")
    p.add_argument("--report", type=Path, default=None,
                   help="write the HTML report and report.json (the next release's baseline) into this folder")
    p.set_defaults(func=cmd_gate)


def _audit_options(args: argparse.Namespace, config_audit: dict[str, Any]) -> Any:
    from workers.audit.options import parse_audit_options

    raw = dict(config_audit)
    for key in ("top_k", "levels", "seeds", "steps", "pairs"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return parse_audit_options(raw)


def _read_report_file(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInput(f"{what} {path} does not exist", field="baseline")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} {path} is not JSON: {exc}", field="baseline") from exc
    model = (report.get("audit") or {}).get("model") if isinstance(report, dict) else None
    if not isinstance(model, dict) or not model.get("name") or not isinstance(report.get("pairs"), list):
        raise InvalidInput(f"{what} {path} is not an audit report (DIR/report.json of `quirkscope gate --report`, "
                           "`quirkscope audit --json` or GET /api/v1/audits/ID/pairs)", field="baseline")
    return report


def run_embedded(args: argparse.Namespace, options: Any, baseline_spec: str | None, out_dir: Path) -> GateRun:
    """The audit in this process, compared with a baseline report file."""
    from workers.audit.compare import compare_reports, ensure_same_model
    from workers.audit.confusion import load_confusion_file
    from workers.audit.pipeline import run_local_audit
    from workers.engine.bundle import load_bundle

    baseline = None
    if baseline_spec is not None and baseline_spec.lower() not in NO_BASELINE:
        if baseline_spec == "latest" or baseline_spec.isdigit() or ("@" in baseline_spec
                                                                     and not Path(baseline_spec).exists()):
            raise InvalidInput(f"in embedded mode the baseline is a report JSON file (DIR/report.json of a previous "
                               f"`quirkscope gate --report DIR`), or none; got {baseline_spec!r}", field="baseline")
        baseline = _read_report_file(Path(baseline_spec), "baseline report")
    if not args.model.exists():
        raise InvalidInput(f"model bundle {args.model} does not exist", field="model")
    model = load_bundle(args.model)
    if not args.confusion.exists():
        raise InvalidInput(f"confusion matrix {args.confusion} does not exist", field="confusion")
    confusion = load_confusion_file(args.confusion, model.manifest.classes)
    if baseline is not None:  # before the audit runs: a wrong baseline should not cost an audit
        ensure_same_model({"audit": {"model": {"name": model.manifest.name, "version": model.manifest.version}}},
                          baseline)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: nothing is written before the inputs are checked
    try:
        candidate = run_local_audit(model, confusion, options, out_dir, audit_id="local", device=args.device)
    except QuirkScopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the audit itself broke: the gate could not run
        raise Unavailable(f"the audit failed: {type(exc).__name__}: {exc}", field="audit") from exc
    return GateRun(candidate=candidate, baseline=baseline, comparison=compare_reports(candidate, baseline))


def run_on_server(args: argparse.Namespace, options: Any, baseline_spec: str | None, timeout: float) -> GateRun:
    """Upload the bundle unless the server has its bytes, reuse or submit the audit, wait for it, compare it."""
    from service.gate_client import GateClient, file_sha256, token_from
    from workers.audit.compare import compare_reports

    client = GateClient(args.server, token_from(args.token))
    if not args.model.is_file():
        raise InvalidInput(f"model bundle {args.model} does not exist", field="model")
    if not args.confusion.exists():
        raise InvalidInput(f"confusion matrix {args.confusion} does not exist", field="confusion")
    confusion = _confusion_body(args.confusion)
    with _progress() as progress:
        sha = file_sha256(args.model)
        model = client.find_model(sha)
        if model is None:
            model = client.upload_model(args.model, progress=progress)
            _say(f"uploaded {args.model} as model {model['id']} ({model['name']} {model['version']})")
        else:
            _say(f"the server has {args.model} already (model {model['id']}, {model['name']} {model['version']})")
        options_json = options.model_dump(mode="json")
        reused = None if args.fresh else client.reusable_audit(model, options_json, _aligned(confusion, model))
        no_baseline = baseline_spec is None or baseline_spec.lower() in NO_BASELINE
        if reused is not None:
            audit_id = reused["id"]
            _say(f"reusing audit {audit_id} of the same bundle, options and matrix (--fresh to audit again)")
        else:
            created = client.create_audit(model["id"], confusion, options_json, None if no_baseline else baseline_spec)
            audit_id = created["id"]
            _say(f"audit {audit_id} submitted; waiting up to {timeout:g}s")
            client.wait_for_audit(audit_id, timeout, progress=progress)
    candidate = client.report(audit_id)
    comparison = compare_reports(candidate, None) if no_baseline else client.compare(audit_id, baseline_spec)
    return GateRun(candidate=candidate, baseline=None, comparison=comparison, report_url=client.report_page(audit_id))


def _confusion_body(path: Path) -> dict[str, Any]:
    """The matrix file as the API takes it (JSON as is, CSV as ``{"csv": text}``)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return {"csv": text}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"confusion matrix {path} is not JSON: {exc}", field="confusion") from exc


def _aligned(confusion: dict[str, Any], model: dict[str, Any]) -> dict[str, Any] | None:
    """The matrix as the server stores it (aligned to the model's classes), to spot a reusable audit."""
    from workers.audit.confusion import parse_confusion

    try:
        return parse_confusion(confusion.get("csv", confusion), model["classes"]).to_dict()
    except QuirkScopeError:
        return None  # the server will say what is wrong with it


class _progress:
    """A rich progress bar on stderr for the upload and the audit, while it runs (transient); a no-op callback when
    stderr is no terminal (CI logs get one line per step from ``_say`` instead)."""

    def __enter__(self) -> Callable[[float, str], None]:
        if not sys.stderr.isatty():
            self.bar = None
            return lambda done, what: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:>10}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.bar.start()
        tasks: dict[str, Any] = {}

        def update(done: float, what: str) -> None:
            name = "upload" if what == "upload" else "audit"
            if name not in tasks:
                tasks[name] = self.bar.add_task(name, total=1.0)
            self.bar.update(tasks[name], completed=done, description=what)

        return update

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def _say(text: str) -> None:
    """A step of the run, on stdout with the findings (stderr holds only the one line of an error)."""
    print(f"quirkscope gate: {text}", flush=True)


def _write(path: Path, text: str, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        fh.write(text)


def write_outputs(args: argparse.Namespace, run: GateRun, outcome: Any, exit_code: int) -> None:
    from workers.audit.gate_outputs import gate_document, junit_xml, markdown_summary, sarif_log

    if args.json:
        _write(args.json, json.dumps(gate_document(run.comparison, outcome, exit_code=exit_code,
                                                   report_url=run.report_url), indent=1) + "\n")
    if args.junit:
        _write(args.junit, junit_xml(run.comparison, outcome, run.candidate, report_url=run.report_url))
    summary = args.summary or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY")
                               else None)
    if summary:
        _write(summary, markdown_summary(run.comparison, outcome, report_url=run.report_url) + "\n", append=True)
    if args.sarif:
        try:
            version = metadata.version("quirkscope")
        except metadata.PackageNotFoundError:
            version = "0"
        _write(args.sarif, json.dumps(sarif_log(run.comparison, outcome, artifact=args.model.as_posix(),
                                                tool_version=version, report_url=run.report_url), indent=1) + "\n")


def print_outcome(run: GateRun, outcome: Any) -> None:
    """The findings with their state and decision, then one line per failure and warning, then the decision."""
    from workers.audit.compare import candidate_findings
    from workers.audit.gate_rules import finding_label

    comparison = run.comparison
    cand, base = comparison["candidate"], comparison["baseline"]
    print(f"candidate: {cand['model']['name']} {cand['model']['version']} (audit {cand['id']}); baseline: "
          + (f"{base['model']['name']} {base['model']['version']} (audit {base['id']})" if base else "none"))
    c = comparison["counts"]
    print(f"findings: {c['new']} new, {c['persisting']} persisting, {c['absent']} absent")
    for f in list(candidate_findings(comparison)) + list(comparison["findings"]["absent"]):
        decision = (f.get("decision") or {}).get("verdict") or ("reopened" if f.get("reopened") else "-")
        print(f"  {f['baseline_state']:<9} {decision:<10} {finding_label(f)}  [{f['fingerprint'][:12]}]")
    for r in outcome.warnings:
        print(f"WARN  {r.rule}: {r.message}")
    for r in outcome.failures:
        print(f"FAIL  {r.rule}: {r.message}")
    verdict = "PASSED" if outcome.passed else f"FAILED ({len(outcome.failures)} finding(s) fail the gate)"
    print(f"gate {verdict}" + (f"; report: {run.report_url}" if run.report_url else ""))


def cmd_gate(args: argparse.Namespace) -> int:
    from service.gate_config import load_gate_config, override_rules
    from workers.audit.compare import with_decisions
    from workers.audit.gate_rules import evaluate_gate

    config, _source = load_gate_config(args.config)
    rules = override_rules(config.rules, args.rule, min_severity=args.min_severity, max_confusion=args.max_confusion)
    options = _audit_options(args, config.audit)
    timeout = args.timeout if args.timeout is not None else config.timeout
    if timeout <= 0:
        raise InvalidInput(f"--timeout must be > 0, got {timeout:g}", field="timeout")
    baseline_spec = args.baseline if args.baseline is not None else config.baseline
    if args.embedded:
        with tempfile.TemporaryDirectory(prefix="quirkscope-gate-") as tmp:
            run = run_embedded(args, options, baseline_spec, args.report or Path(tmp))
            if args.report:
                from workers.audit.report_html import write_report

                write_report(run.candidate, args.report)
                run.report_url = str(args.report / "index.html")
    else:
        run = run_on_server(args, options, baseline_spec or "latest", timeout)
        if args.report:
            from service.gate_client import GateClient, token_from

            GateClient(args.server, token_from(args.token)).download_report(run.comparison["candidate"]["id"],
                                                                             args.report)
    outcome = evaluate_gate(run.comparison, run.candidate, rules)
    exit_code = EXIT_PASSED if outcome.passed else EXIT_FAILED
    if args.report:  # the candidate with its standing decisions: the next release's --baseline (embedded)
        _write(args.report / "report.json", json.dumps(with_decisions(run.candidate, run.comparison), indent=1))
    write_outputs(args, run, outcome, exit_code)
    print_outcome(run, outcome)
    return exit_code
