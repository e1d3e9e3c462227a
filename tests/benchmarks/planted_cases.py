"""Does the audit find planted shortcuts in models it was not tuned on? Over the randomised cases of one split of
workers/engine/reference/cases.py (class sets, cue designs, architectures), trains (or loads from the cache) each
case's model, audits it as tests/benchmarks/planted_quirks.py does (plan_audit -> visualise -> analyse_pairs, CPU) on
its planted pairs and clean control pairs, and scores the flags against the planted truth with the pure functions of
workers/engine/reference/scoring.py (definitions there). Printed, never asserted.

    python tests/benchmarks/planted_cases.py --split calibration|heldout [--cases 20] [--steps 128] [--json OUT]
                                             [--first 0] [--write-rates PATH] [--build-only] [--cache DIR] [--threads 1]
                                             [--vis-cache DIR] [--partner-contrast 1]
    python tests/benchmarks/planted_cases.py --split SPLIT --rescore ROWS.json [ROWS.json ...] [--write-rates PATH]
                                             [--replicated-by CONTRASTED.json ...]

Calibrate flag thresholds on ``--split calibration`` and report on ``--split heldout``: the held-out split has other
seeds and cue designs (cases.py's docstring). ``--build-only`` trains and caches the cases and prints each one's
accuracy and planted-vs-clean confusion, without auditing. ``--partner-contrast 1`` audits with each class's pictures
set apart from the classes it is audited with (``VisualizationConfig.partner_contrast``); ``--replicated-by`` then
re-scores a run of today's pictures keeping only the flags that such a run of the same cases repeats
(``replicated``).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
import time
from dataclasses import astuple
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from workers.audit.analysis import AuditLeanings, PairScores, PairShares, with_audit_baseline
from workers.audit.confusion import parse_confusion
from workers.audit.flag_rates import proportion_interval, rate_intervals
from workers.audit.flags import Flag, FlagThresholds, derive_flags
from workers.audit.options import AuditOptions
from workers.audit.pipeline import ObjectiveKey, Visualization, analyse_pairs, plan_audit, visualise
from workers.engine.bundle import LoadedModel
from workers.engine.config import VisualizationConfig
from workers.engine.reference import cases, scoring


def case_line(case: cases.TrainedCase, seconds: str) -> str:
    spec = case.spec
    planted = ", ".join(f"{c.family} {case.rate(c.class_name, c.partner):.2f}/{case.rate(c.partner, c.class_name):.2f}"
                        for c in spec.cues)
    clean = ", ".join(f"{v:.2f}" for v in case.clean_confusion().values())
    learned = sum(case.cue_learned(c) for c in spec.cues)
    return (f"{spec.case_id:16s} {spec.architecture:17s} acc {case.test_accuracy:.2f}  planted (cue>partner/"
            f"partner>cue) [{planted}]  clean [{clean}]  learned {learned}/{len(spec.cues)}  {seconds}")


def case_confusion_row(case: cases.TrainedCase, build_s: float) -> dict:
    return {"case_id": case.spec.case_id, "architecture": case.spec.architecture,
            "test_accuracy": case.test_accuracy, "build_s": build_s, "train_s": case.seconds,
            "planted": [{"family": c.family, "cue_as_partner": case.rate(c.class_name, c.partner),
                         "partner_as_cue": case.rate(c.partner, c.class_name), "learned": case.cue_learned(c)}
                        for c in case.spec.cues],
            "clean": list(case.clean_confusion().values())}


def print_learning(per_case: list[dict]) -> None:
    """Did the models learn the cues? Mean directed confusion of the planted pairs vs the clean pairs, and cues
    learned (``TrainedCase.cue_learned``) per family."""
    planted = [p for row in per_case for p in row["planted"]]
    clean = [v for row in per_case for v in row["clean"]]
    if not planted:
        return
    print(f"planted pairs: cue class read as partner {sum(p['cue_as_partner'] for p in planted) / len(planted):.2f}, "
          f"partner read as cue class {sum(p['partner_as_cue'] for p in planted) / len(planted):.2f} (mean); clean "
          f"pairs (larger direction) {sum(clean) / max(len(clean), 1):.2f}; training "
          f"{max(row['train_s'] for row in per_case):.0f}s at most")
    learned = {}
    for p in planted:
        done, total = learned.get(p["family"], (0, 0))
        learned[p["family"]] = (done + p["learned"], total + 1)
    print("cues learned: " + ", ".join(f"{fam} {d}/{t}" for fam, (d, t) in learned.items())
          + f"; all {sum(p['learned'] for p in planted)}/{len(planted)}")


def cached_visualise(model: LoadedModel, keys: list, partners: dict[str, list[str]], options: AuditOptions,
                     cache: Path | None) -> list:
    """``pipeline.visualise`` on the CPU, or its result read back from ``cache`` (one .npz of arrays and one .json of
    the rest per case, keyed by the case, the objective keys, each class's partners and the engine configuration),
    so that scoring can be iterated on without optimising again. Nothing is unpickled."""
    if cache is None:
        return visualise(model, keys, options, partners=partners, device="cpu")
    config = options.engine_config()
    key = hashlib.sha256(json.dumps([model.sha256, [list(astuple(k)) for k in keys], partners,
                                     config.model_dump(mode="json")], default=str).encode()).hexdigest()[:24]
    arrays_path, meta_path = cache / f"{key}.npz", cache / f"{key}.json"
    if arrays_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as arrays:
            return [Visualization(key=ObjectiveKey(*m["key"]), kappa=m["kappa"], logit=m["logit"],
                                  probability=m["probability"], config=m["config"],
                                  tensors={s: arrays[f"{i}/{s}"] for s in m["streams"]}) for i, m in enumerate(meta)]
    vis = visualise(model, keys, options, partners=partners, device="cpu")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(arrays_path, **{f"{i}/{s}": t for i, v in enumerate(vis) for s, t in v.tensors.items()})
    meta_path.write_text(json.dumps([{"key": list(astuple(v.key)), "kappa": v.kappa, "logit": float(v.logit),
                                      "probability": v.probability, "config": v.config,
                                      "streams": list(v.tensors)} for v in vis], default=str))
    return vis


def audit_case(case: cases.TrainedCase, steps: int, vis_cache: Path | None = None,
               partner_contrast: float = 0.0, factor_probes: bool = False) -> tuple[list[dict], dict[str, float]]:
    """Rows (one per planted or clean pair) and the seconds each stage took."""
    spec = case.spec
    model = LoadedModel(module=case.module, manifest=case.manifest, sha256=spec.key())
    confusion = parse_confusion(case.confusion, case.manifest.classes)
    wanted = {frozenset(p): cue for cue in spec.cues for p in [(cue.class_name, cue.partner)]}
    wanted.update({frozenset(p): None for p in spec.clean_pairs})
    options = AuditOptions(top_k=3, pairs=[*spec.planted_pairs, *spec.clean_pairs], steps=steps,
                           visualization=VisualizationConfig(partner_contrast=partner_contrast),
                           factor_probes=factor_probes)
    t0 = time.perf_counter()
    plan = plan_audit(model.manifest, confusion, options)
    vis = cached_visualise(model, plan.keys, plan.partners, options, vis_cache)
    t1 = time.perf_counter()
    rows, scored = [], {}
    for pair in plan.pairs:
        key = frozenset((pair.a, pair.b))
        if key in wanted:  # ranked pairs outside the truth lists are not scored
            scored.setdefault(key, pair)
    for result in analyse_pairs(model, list(scored.values()), vis, options, device="cpu"):
        pair = result.pair
        cue = wanted[frozenset((pair.a, pair.b))]
        flags = tuple(scoring.FlagRecord.of(f) for f in result.flags)
        rows.append({
            "case_id": spec.case_id, "split": spec.split, "architecture": spec.architecture,
            "a": pair.a, "b": pair.b, "rank": pair.rank, "explicit": pair.explicit,
            "kind": "planted" if cue else "clean", "family": cue.family if cue else None,
            "cue": cue.to_json() if cue else None,
            "confusion": {"a_as_b": case.rate(pair.a, pair.b), "b_as_a": case.rate(pair.b, pair.a)},
            "flags": [f.to_json() for f in result.flags],
            "learned": case.cue_learned(cue) if cue else None,
            "found": scoring.cue_found(flags, cue) if cue else None,
            "found_as_expected": scoring.cue_found_as_expected(flags, cue, spec.architecture) if cue else None,
            "localised": scoring.cue_localised(flags, cue, spec.architecture) if cue else None,
            "false_flags": len(scoring.false_flags(flags)) if cue is None else None,
            "scores": result.scores.to_json(),
        })
    return rows, {"visualise_s": t1 - t0, "analyse_s": time.perf_counter() - t1}


def outcomes_of(rows: list[dict]) -> list[scoring.PairOutcome]:
    return [scoring.outcome_of_row(r) for r in rows]


def case_inputs(rows: list[dict]) -> dict[str, list]:
    """case id -> the manifest inputs of its model, for every case of the stored rows' split up to the last one."""
    split = rows[0]["split"] if rows else "calibration"
    count = max((int(r["case_id"].split("-")[1]) for r in rows), default=-1) + 1
    return {s.case_id: cases.case_manifest(s).inputs for s in cases.case_specs(split, count)}


def load_rows(paths: list[Path], split: str) -> tuple[list[dict], int]:
    """The rows of one or more files an earlier ``--json`` run wrote (e.g. cases 0-19 and 20-39), and the steps
    they were audited with. ValueError when a row is of another split, a pair comes twice, or the files were
    audited with different steps, or one cannot be read as JSON."""
    try:
        stored = [json.loads(path.read_text()) for path in paths]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the rows: {exc}") from exc
    rows = [row for data in stored for row in (data["rows"] if isinstance(data, dict) else data)]
    if {r["split"] for r in rows} != {split}:
        raise ValueError(f"the rows are not all of the {split} split")
    if len({(r["case_id"], r["a"], r["b"]) for r in rows}) != len(rows):
        raise ValueError("the files share rows (the same case's pair twice)")
    steps = {data["steps"] for data in stored if isinstance(data, dict)}
    if len(steps) > 1:
        raise ValueError("the files were audited with different --steps")
    return rows, steps.pop() if steps else 0


def stored_scores(rows: list[dict]) -> list[PairScores]:
    """Each stored row's scores, with its case's audit baseline (``analysis.AuditLeanings``) derived again from the
    stored shares of every row of that case, as an audit of those pairs computes it."""
    scores = [PairScores.from_json(r["scores"], r["a"], r["b"]) for r in rows]
    by_case: dict[str, list[PairScores]] = {}
    for r, s in zip(rows, scores):
        by_case.setdefault(r["case_id"], []).append(s)
    leanings = {case: AuditLeanings.gather([PairShares.of_scores(s) for s in case_scores])
                for case, case_scores in by_case.items()}
    return [with_audit_baseline(s, leanings[r["case_id"]]) for r, s in zip(rows, scores)]


def replicated(flags: Sequence[Flag], other: Sequence[Flag]) -> list[Flag]:
    """The flags of ``flags`` that a second, independent set of pictures of the same pair also raised (``other``:
    the same code, on the same stream, about the same class), and every WEAK_VISUALISATION, which describes the
    pictures, not the model. Pure. Tried in docs/planted_cases.md round 8 with the contrasted pictures as the
    second set: on the calibration split it kept 1 of 80 clean pairs flagged instead of 8, for 32 of 103 cues found
    instead of 43, on both halves alike. On a fresh held-out draw it kept 3 of 40 instead of 5, for 12 of 47 cues
    instead of 17. Not adopted: the audit does not use it."""
    def key(f: Flag) -> tuple:
        return f.code, f.stream, f.class_name

    seen = {key(f) for f in other}
    return [f for f in flags if f.code == "WEAK_VISUALISATION" or key(f) in seen]


def rescored_flags(rows: list[dict], th: FlagThresholds) -> list[list]:
    """Each stored row's flags derived again from its stored scores under ``th`` (the rules as they are now)."""
    specs = case_inputs(rows)
    return [derive_flags(s, specs[r["case_id"]], th) for r, s in zip(rows, stored_scores(rows))]


def rescored_outcomes(rows: list[dict], th: FlagThresholds,
                      contrasted: list[dict] | None = None) -> list[scoring.PairOutcome]:
    """The outcomes of stored rows with each pair's flags derived again under ``th``, without auditing again; with
    ``contrasted`` (the rows of the same cases audited with ``--partner-contrast``), only the flags those rows'
    flags repeat (``replicated``). ValueError when a pair has no contrasted row."""
    flags = rescored_flags(rows, th)
    if contrasted is not None:
        other = {(r["case_id"], r["a"], r["b"]): f for r, f in zip(contrasted, rescored_flags(contrasted, th))}
        missing = [(r["case_id"], r["a"], r["b"]) for r in rows if (r["case_id"], r["a"], r["b"]) not in other]
        if missing:
            raise ValueError(f"no contrasted row for {len(missing)} pairs, e.g. {missing[0]}")
        flags = [replicated(f, other[(r["case_id"], r["a"], r["b"])]) for r, f in zip(rows, flags)]
    return [scoring.outcome_of_row(r, f) for r, f in zip(rows, flags)]


def interval_text(successes: int, trials: int) -> str:
    """'a-b%': the 95% Wilson interval of successes / trials, or '-' without trials."""
    interval = proportion_interval(successes, trials)
    return f"{interval[0]:.0%}-{interval[1]:.0%}" if interval else "-"


def print_summary(outcomes: list[scoring.PairOutcome]) -> dict:
    table = scoring.code_family_table(outcomes)
    print("\nflag code x cue family: fired about the cue (right class and stream) / fired at all / planted pairs")
    print(f"{'code':28s}" + "".join(f"{fam:>13s}" for fam in cases.FAMILIES))
    for code, per_family in table.items():
        print(f"{code:28s}" + "".join(f"{v['right']:>5d}/{v['any']}/{v['total']:<4d}".rjust(13)
                                      for v in per_family.values()))
    recall = scoring.family_recall(outcomes)
    print("\nrecall per family: found / planted; found by an expected code / cues expecting one; localised / local "
          "cues on position-keeping models")
    for fam, r in recall.items():
        local = f"{r['localised']}/{r['local_total']}" if r["local_total"] else "-"
        print(f"  {fam:12s} found {r['found']}/{r['total']}  as expected {r['as_expected']}/{r['expected_total']}  "
              f"localised {local}")
    clean = scoring.clean_pair_flags(outcomes)
    n = max(clean["pairs"], 1)
    print(f"\nclean control pairs: {clean['pairs']}; with any false flag: {clean['pairs_with_any']}; "
          f"high-severity false flags: {clean['high']}")
    for code, count in clean["per_code"].items():
        print(f"  {code:28s} {count} ({count / n:.2f} per clean pair)")
    t = scoring.totals(outcomes)
    print(f"\ntotal: cues found {t['found']}/{t['cues']}; found as expected {t['as_expected']}/{t['expected']}; "
          f"localised {t['localised']}/{t['local']}; clean pairs with a false flag {t['clean_any']}/{t['clean']}")
    print("  95% Wilson intervals: " + "; ".join(
        f"{name} {interval_text(k, n)}" for name, k, n in (("found", t["found"], t["cues"]),
                                                           ("localised", t["localised"], t["local"]),
                                                           ("clean pairs flagged", t["clean_any"], t["clean"]))))
    rates = scoring.code_rates(outcomes)
    print("\nper code: precision (correct/fired), recall (found/expected)")
    for code, r in rates.items():
        p = "-" if r["precision"] is None else f"{r['precision']:.2f}"
        rc = "-" if r["recall"] is None else f"{r['recall']:.2f}"
        print(f"  {code:28s} precision {p} ({r['correct']}/{r['fired']}, {interval_text(r['correct'], r['fired'])})  "
              f"recall {rc} ({r['found']}/{r['expected']}, {interval_text(r['found'], r['expected'])})")
    return {"code_family": table, "family_recall": recall, "clean": clean, "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=cases.SPLITS, required=True)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--first", type=int, default=0,
                        help="index of the split's first case to run (e.g. 20: cases 20-39, a fresh draw of the split)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--json", type=Path, help="write every row (flags, scores, truth) and the summary here")
    parser.add_argument("--write-rates", type=Path, help="write per-code precision/recall JSON here")
    parser.add_argument("--build-only", action="store_true", help="train and cache the cases, do not audit")
    parser.add_argument("--cache", type=Path, default=None, help=f"case cache (default {cases.DEFAULT_CACHE})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--rescore", type=Path, nargs="+", metavar="ROWS.json",
                        help="no audit: derive the flags of rows earlier --json runs wrote (one or more files, e.g. "
                             "cases 0-19 and 20-39) again from their stored scores under the current rules and "
                             "default thresholds, and print the summary")
    parser.add_argument("--vis-cache", type=Path, default=None,
                        help="keep each case's visualisations here and reuse them (iterating on the scoring)")
    parser.add_argument("--partner-contrast", type=float, default=0.0,
                        help="audit with each class's pictures set apart from the classes it is audited with")
    parser.add_argument("--factor-probes", action="store_true",
                        help="audit with the factor probes (AuditOptions.factor_probes; off by default, ~9.5x)")
    parser.add_argument("--replicated-by", type=Path, nargs="+", metavar="CONTRASTED.json",
                        help="with --rescore: keep only the flags that rows of the same cases audited with "
                             "--partner-contrast repeat (same code, stream and class)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rescore:
        try:
            rows, steps = load_rows(args.rescore, args.split)
            contrasted = load_rows(args.replicated_by, args.split)[0] if args.replicated_by else None
            outcomes = rescored_outcomes(rows, FlagThresholds(), contrasted)
        except ValueError as exc:
            parser.error(f"--rescore: {exc}")
        print(f"split={args.split}: {len(rows)} stored rows of {len({r['case_id'] for r in rows})} cases, flags "
              "derived again under the current rules"
              + (", kept where the contrasted pictures repeat them" if contrasted is not None else ""))
        write_rates(args.write_rates, args.split, sorted({r["case_id"] for r in rows}), steps, print_summary(outcomes))
        return
    if args.first < 0 or args.cases < 1:
        parser.error("--first must be >= 0 and --cases >= 1")
    specs = cases.case_specs(args.split, args.first + args.cases)[args.first:]
    t_start = time.perf_counter()
    rows: list[dict] = []
    per_case: list[dict] = []
    for k, spec in enumerate(specs):
        t0 = time.perf_counter()
        case = cases.build_case(spec, args.cache)
        build_s = time.perf_counter() - t0
        origin = f"cached {build_s:.1f}s" if case.from_cache else f"trained {build_s:.0f}s"
        if args.build_only:
            print(case_line(case, origin), flush=True)
            per_case.append(case_confusion_row(case, build_s))
            continue
        case_rows, timings = audit_case(case, args.steps, args.vis_cache, args.partner_contrast,
                                        args.factor_probes)
        rows += case_rows
        total_s = time.perf_counter() - t0
        found = sum(bool(r["found"]) for r in case_rows if r["kind"] == "planted")
        false = sum(r["false_flags"] for r in case_rows if r["kind"] == "clean")
        print(case_line(case, f"{origin}, visualise {timings['visualise_s']:.0f}s, analyse "
                              f"{timings['analyse_s']:.0f}s") + f"  found {found}/{len(spec.cues)}, false {false}",
              flush=True)
        per_case.append({**case_confusion_row(case, build_s), **timings, "total_s": total_s})
        if k == 0 and len(specs) > 1:
            print(f"  projection: {len(specs)} cases x {total_s:.0f}s = {len(specs) * total_s / 60:.0f} min "
                  f"({'cached' if case.from_cache else 'training included'})", flush=True)
    elapsed = time.perf_counter() - t_start
    print(f"\nsplit={args.split} cases={len(specs)} " + ("build only" if args.build_only else f"steps={args.steps}")
          + f" ({elapsed:.0f}s)")
    print_learning(per_case)
    summary = print_summary(outcomes_of(rows)) if not args.build_only else {}
    learned = [r for r in rows if r["kind"] == "planted" and r["learned"]]
    if learned:
        print(f"among the cues the model learnt (TrainedCase.cue_learned): found {sum(r['found'] for r in learned)}/"
              f"{len(learned)}, found as expected {sum(r['found_as_expected'] for r in learned)}/{len(learned)}")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "cases": len(specs), "first": args.first,
                                         "steps": args.steps, "partner_contrast": args.partner_contrast,
                                         "factor_probes": args.factor_probes,
                                         "generator": cases.GENERATOR_VERSION,
                                         "per_case": per_case, "rows": rows, "summary": summary},
                                        indent=1, default=list))
    if not args.build_only:
        write_rates(args.write_rates, args.split, [s.case_id for s in specs], args.steps, summary)


def write_rates(path: Path | None, split: str, case_ids: list[str], steps: int, summary: dict) -> None:
    """The per-code precision and recall of ``summary`` as the JSON ``workers/audit/flag_rates.py`` reads, with the
    cases they were measured on."""
    if path is None:
        return
    rates = {code: {**{k: r[k] for k in ("precision", "recall", "fired", "correct", "expected", "found")},
                    **rate_intervals(r["correct"], r["fired"], r["found"], r["expected"])}
             for code, r in summary["rates"].items()}
    path.write_text(json.dumps({"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                "rules_commit": rules_commit(), "split": split, "cases": len(case_ids),
                                "case_ids": case_ids, "steps": steps, "codes": rates}, indent=1))


def rules_commit() -> str | None:
    """The commit whose flag rules the rates were read with (``git rev-parse HEAD``), with "+changes" when
    ``workers/`` differs from it; None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "workers"], cwd=root, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
