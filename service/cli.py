"""The ``quirkscope`` command line: generate the reference model, visualise classes, audit a model locally, gate a
release (``service.gate``), export a bundle, run the demo (and, from ``service.commands``, the service). Every bad
argument or input ends with exit code 2 and a one-line message, a server or audit that could not be had with 3;
nothing is written before the inputs are validated."""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

from workers.engine.errors import QuirkScopeError, Unavailable

log = logging.getLogger("quirkscope")


class UsageError(QuirkScopeError):
    code = "usage"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the argument, exit code 2 (not a usage block)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        field = None
        if match := re.match(r"argument ([^:/ ]+)(?:/[^: ]+)?: ", message):
            field, message = match.group(1).lstrip("-"), message[match.end():]
        elif match := re.match(r"the following arguments are required: ([^, ]+)", message):
            field = match.group(1).lstrip("-")
        where = f" [{field}]" if field else ""
        self.exit(2, f"{self.prog}: error{where}: {message}\n")


def _classes_arg(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give class names separated by commas")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _extra_shortcut(text: str):  # type: ignore[no-untyped-def]
    from workers.engine.reference.data import extra_shortcut

    try:
        return extra_shortcut(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_demo_data(args: argparse.Namespace) -> int:
    from workers.engine.reference.train import train_reference, write_reference

    trained = train_reference(args.seed, head=args.head, epochs=args.epochs, extra=tuple(args.plant),
                              version=args.version)
    bundle, confusion = write_reference(trained, args.out, fmt=args.format)
    planted = "".join(f"; planted a {p.kind} in {p.class_name} ({p.stream}, region {p.region})" for p in args.plant)
    print(f"trained the reference model {trained.manifest.name} {trained.manifest.version} (seed {args.seed}, "
          f"head {args.head}) in {trained.seconds:.1f}s; clean test accuracy {trained.test_accuracy:.1%}{planted}")
    print(f"bundle: {bundle}\nconfusion matrix: {confusion}")
    return 0


def _load_model(path: Path):
    from workers.engine.bundle import load_bundle

    if not path.exists():
        raise UsageError(f"model bundle {path} does not exist", field="model")
    return load_bundle(path)


def cmd_visualize(args: argparse.Namespace) -> int:
    from workers.audit.options import parse_audit_options
    from workers.audit.pipeline import ObjectiveKey, render_class_artifacts, visualise

    model = _load_model(args.model)
    unknown = [c for c in args.classes if c not in model.manifest.classes]
    if unknown:
        raise UsageError(f"unknown class(es) {', '.join(unknown)}; the model has {', '.join(model.manifest.classes)}",
                         field="classes")
    options = parse_audit_options({"levels": args.levels, "seeds": args.seeds, "steps": args.steps})
    keys = [ObjectiveKey(c, level, seed) for c in args.classes for level in range(args.levels)
            for seed in range(args.seeds)]
    t0 = time.perf_counter()
    results = visualise(model, keys, options, device=args.device)
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        render_class_artifacts(model.manifest, results, args.out, seed=seed)
    summary = [{"class": v.key.class_name, "level": v.key.level, "kappa": v.kappa, "seed": v.key.seed,
                "logit": v.logit, "probability": v.probability, "config": v.config} for v in results]
    (args.out / "visualizations.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(results)} visualisations x {args.steps} steps in {seconds:.1f}s "
          f"({len(results) * args.steps / seconds:.0f} sample-iterations/s); min softmax "
          f"{min(v.probability for v in results):.3f}; written to {args.out}")
    return 0


def _audit_options(args: argparse.Namespace):
    from workers.audit.options import parse_audit_options

    return parse_audit_options({"top_k": args.top_k, "min_support": args.min_support, "min_rate": args.min_rate,
                                "pairs": args.pairs or [], "levels": args.levels, "seeds": args.seeds,
                                "steps": args.steps, "factor_probes": args.factor_probes})


def run_audit_to_disk(model_path: Path, confusion_path: Path, options, report_dir: Path | None,
                      json_path: Path | None, device: str | None) -> dict:
    """Validate everything, run the audit in-process, write the JSON and the HTML report."""
    from workers.audit.confusion import load_confusion_file
    from workers.audit.pipeline import plan_audit, run_local_audit
    from workers.audit.report_html import write_report

    model = _load_model(model_path)
    if not confusion_path.exists():
        raise UsageError(f"confusion matrix {confusion_path} does not exist", field="confusion")
    confusion = load_confusion_file(confusion_path, model.manifest.classes)
    plan_audit(model.manifest, confusion, options)  # the pairs too are checked before anything is written
    out_dir = report_dir or (json_path.parent if json_path else Path("audit-report"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report = run_local_audit(model, confusion, options, out_dir, device=device)
    if report_dir is not None:
        write_report(report, report_dir)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
    return report


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report['audit']['model']['name']} {report['audit']['model']['version']}: audited pairs")
    for col in ("rank", "a", "b", "a as b", "b as a"):
        table.add_column(col)
    table.add_column("flags", overflow="fold")
    for p in report["pairs"]:
        # "[stream]" would be read as rich markup: escaped; low-severity flags dimmed
        flags = ", ".join(f"[{'dim' if f.get('severity') == 'low' else 'default'}]"
                          + escape(f["code"] + (f"[{f['stream']}]" if f["stream"] else "")) + "[/]"
                          for f in p["flags"]) or "-"
        table.add_row(str(p["rank"]), p["a"], p["b"], f"{p['confusion']['a_as_b']:.0%}",
                      f"{p['confusion']['b_as_a']:.0%}", flags)
    Console().print(table)
    timings = report["audit"].get("timings") or {}
    cost = timings.get("cost") or {}
    stages = [f"{stage} {timings[f'{stage}_s']:.1f}s"
              + (f" ({cost[stage]['forward_equivalents']:,} model forward-equivalents)" if stage in cost else "")
              for stage in ("visualise", "analyse", "render") if f"{stage}_s" in timings]
    if stages:
        print("stages: " + ", ".join(stages))


def cmd_audit(args: argparse.Namespace) -> int:
    if not args.embedded:
        raise UsageError("only --embedded (in-process) audits are available from this command; "
                         "use the API (POST /api/v1/audits) for a running service", field="embedded")
    report = run_audit_to_disk(args.model, args.confusion, _audit_options(args), args.report, args.json, args.device)
    print_summary(report)
    if args.report:
        print(f"report: {args.report / 'index.html'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.audit.options import parse_audit_options
    from workers.engine.reference.train import train_reference, write_reference

    t0 = time.perf_counter()
    trained = train_reference(args.seed)
    bundle, confusion = write_reference(trained, args.out / "model")
    print(f"trained the reference model in {trained.seconds:.1f}s (clean test accuracy {trained.test_accuracy:.1%})")
    options = parse_audit_options({"top_k": args.top_k, "steps": args.steps, "factor_probes": args.factor_probes})
    report = run_audit_to_disk(bundle, confusion, options, args.out / "report", args.out / "report.json", args.device)
    print_summary(report)
    print(f"report: {args.out / 'report' / 'index.html'}  (demo took {time.perf_counter() - t0:.0f}s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from workers.engine.bundle import export_from_spec
    from workers.engine.manifest import parse_manifest

    if not args.manifest.exists():
        raise UsageError(f"manifest {args.manifest} does not exist", field="manifest")
    sys.path.insert(0, str(Path.cwd()))
    path = export_from_spec(args.spec, parse_manifest(args.manifest.read_bytes()), args.out, fmt=args.format)
    print(f"bundle: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.commands import serve

    serve(embedded=args.embedded, host=args.host, port=args.port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    from service.commands import run_gpu_workers, run_worker

    if args.metrics_addr is not None:  # read by every worker process (the --gpus ones inherit it)
        os.environ["QUIRKSCOPE_WORKER_METRICS_ADDR"] = args.metrics_addr
    if args.gpus is not None:
        if args.queues not in (None, ["gpu"]):
            raise UsageError("--gpus starts gpu-queue workers; run the cpu queue as its own worker (-Q cpu)",
                             field="queues")
        if args.concurrency != 1:
            raise UsageError("--gpus runs one process per GPU (concurrency 1); leave out -c", field="concurrency")
        return run_gpu_workers(args.gpus, metrics_port=args.metrics_port, loglevel=args.loglevel)
    if args.metrics_port:
        os.environ["QUIRKSCOPE_WORKER_METRICS_PORT"] = str(args.metrics_port)
    run_worker(args.queues or ["gpu", "cpu"], concurrency=args.concurrency, pool=args.pool, loglevel=args.loglevel)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from service.commands import create_token

    token = create_token(args.project, args.scopes)
    print(f"new token for project {args.project} (scopes {','.join(args.scopes)}), shown once: {token}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from service.commands import migrate

    migrate()
    print("database at the newest schema")
    return 0


def cmd_reaper(args: argparse.Namespace) -> int:
    from service.commands import reap_once, run_reaper

    if args.once:
        print(json.dumps(reap_once()))
    else:
        run_reaper()
    return 0


def _scopes(text: str) -> list[str]:
    from db.models import SCOPES

    scopes = [s.strip() for s in text.split(",") if s.strip()]
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise argparse.ArgumentTypeError(f"scopes are {', '.join(SCOPES)}; got {text!r}")
    return scopes


def _queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    if not queues or set(queues) - {"gpu", "cpu"}:
        raise argparse.ArgumentTypeError(f"queues are gpu and cpu; got {text!r}")
    return queues


def _bind_address(text: str) -> str:
    from workers.settings import is_bind_address

    if not is_bind_address(text):
        raise argparse.ArgumentTypeError(f"an IP address (127.0.0.1, 0.0.0.0, ::, ...); got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="quirkscope", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate clips, train the tiny reference model, write bundle + matrix")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", choices=("flatten", "gap"), default="flatten")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--format", choices=("safetensors", "onnx", "torch.export"), default="safetensors")
    p.add_argument("--plant", type=_extra_shortcut, action="append", default=[], metavar="KIND:CLASS",
                   help="plant an extra shortcut in CLASS's training clips: watermark (appearance, bottom-right) or "
                        "flicker (motion, bottom-left); CLASS one of DiscSlideRight, DiscGlideRight, BoxRiseUp, "
                        "BoxFloatUp, e.g. watermark:BoxFloatUp (repeatable)")
    p.add_argument("--version", default=None, help="the bundle's version (default seed<SEED>)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("visualize", help="render what the model thinks classes look like and how they move")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--classes", type=_classes_arg, required=True)
    p.add_argument("--levels", type=_positive, default=3)
    p.add_argument("--seeds", type=_positive, default=2)
    p.add_argument("--steps", type=_positive, default=128)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.set_defaults(func=cmd_visualize)

    for name, helptext in (("audit", "audit a model bundle against its confusion matrix"),
                           ("demo", "train the reference model, audit it, write the report")):
        p = sub.add_parser(name, help=helptext)
        if name == "audit":
            p.add_argument("--model", type=Path, required=True)
            p.add_argument("--confusion", type=Path, required=True)
            p.add_argument("--embedded", action="store_true", help="run in this process (no servers)")
            p.add_argument("--json", type=Path, default=None)
            p.add_argument("--report", type=Path, default=None)
            p.add_argument("--min-support", type=_positive, default=1)
            p.add_argument("--min-rate", type=float, default=0.0)
            p.add_argument("--pairs", default=None, help="extra pairs to audit: a:b,c:d")
            p.add_argument("--levels", type=_positive, default=3)
            p.add_argument("--seeds", type=_positive, default=3)
            p.set_defaults(func=cmd_audit)
        else:
            p.add_argument("--out", type=Path, default=Path("demo-out"))
            p.add_argument("--seed", type=int, default=0)
            p.set_defaults(func=cmd_demo)
        p.add_argument("--top-k", type=_positive, default=10)
        p.add_argument("--steps", type=_positive, default=128)
        p.add_argument("--device", default=None)
        p.add_argument("--factor-probes", action="store_true",
                       help="also ask the model with factor probes (STATIC_/MOTION_FACTOR_CUE, local LOCALIZED_CUE; "
                            "~9.5x the scoring cost)")

    from service.gate import add_gate_parser

    add_gate_parser(sub, _positive)

    p = sub.add_parser("export", help="write a bundle from your own package.module:function returning an nn.Module")
    p.add_argument("spec")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", choices=("onnx", "safetensors", "torch.export"), default="onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve the API and pages (--embedded: plus workers on SQLite, no Redis)")
    p.add_argument("--embedded", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive, default=8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker for the gpu and/or cpu queue (--gpus: one per GPU)")
    p.add_argument("-Q", "--queues", type=_queues, default=None, help="gpu, cpu or gpu,cpu (default: both)")
    p.add_argument("--gpus", default=None, help="all or 0,1,...: one gpu-queue worker process per GPU")
    p.add_argument("--metrics-port", type=_positive, default=0,
                   help="serve Prometheus metrics on this port (with --gpus: this port + i for the i-th GPU)")
    p.add_argument("--metrics-addr", type=_bind_address, default=None,
                   help="address of the metrics port (default 127.0.0.1; another one needs "
                        "QUIRKSCOPE_METRICS_TOKEN, or QUIRKSCOPE_METRICS_PUBLIC=1)")
    p.add_argument("-c", "--concurrency", type=_positive, default=1)
    p.add_argument("-P", "--pool", default="prefork")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("token", help="API tokens")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    t = token_sub.add_parser("create", help="create a token; prints it once (last word of the output)")
    t.add_argument("--project", required=True)
    t.add_argument("--scopes", type=_scopes, default=["submit", "read", "review"])
    t.set_defaults(func=cmd_token_create)

    p = sub.add_parser("migrate", help="upgrade the database to the newest schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("reaper", help="re-enqueue work whose worker died (--once: one pass)")
    p.add_argument("--once", action="store_true")
    p.set_defaults(func=cmd_reaper)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except QuirkScopeError as exc:
        where = f" [{exc.field}]" if exc.field and not exc.message.startswith(f"{exc.field}:") else ""
        print(f"quirkscope: error{where}: {exc.message}", file=sys.stderr)
        return exit_code(exc)


def exit_code(exc: QuirkScopeError) -> int:
    """The one mapping of errors to exit codes: 3 when something needed could not be had (a server, an audit that
    failed or timed out), 2 for every bad usage or input. (0 and 1 are a gate's pass and fail.)"""
    return 3 if isinstance(exc, Unavailable) else 2

if __name__ == "__main__":
    sys.exit(main())
