"""Does an audit find the planted quirks? Over several seeds of generated data + reference model, prints a table:
for each planted pair its confusion rank, whether it is flagged, with which stream, and whether LOCALIZED_CUE's
peak_xy falls inside the planted region; and, for pairs without a planted shortcut audited through explicit pairs,
whether any of them gets LOCALIZED_CUE. Printed, never asserted (tests/test_audit_planted.py asserts one seed).

    python tests/benchmarks/planted_quirks.py [--seeds 0 1 2] [--head flatten|gap] [--steps 128] [--json OUT]
                                              [--localisation attribution exhaustive]

With several ``--localisation`` modes, every mode scores the same visualisations, so the tables compare the
scoring alone; each table ends with the model evaluations its scoring spent per pair. ``--compare`` also audits each
trained model with these ``VisualizationConfig`` overrides (JSON objects, e.g. ``'{"parameterization": "fourier"}'``),
one table per setting after the default's, to compare visualisation defaults on the same trained models.

"loc ok": a LOCALIZED_CUE on the planted stream. "named": the flags about the planted class (or both classes)
name the planted stream and no other (CONTEXT_CUE aside) -- the test for a head that pools position away.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workers.audit.confusion import parse_confusion
from workers.audit.evidence import EvidenceConfig
from workers.audit.options import AuditOptions
from workers.audit.pipeline import analyse_pairs, plan_audit, visualise
from workers.engine.bundle import LoadedModel
from workers.engine.config import VisualizationConfig
from workers.engine.reference import data
from workers.engine.reference.train import train_reference

CLEAN_PAIRS = [("BarSweepLeft", "CrossDropDown"), ("RingOrbit", "DiamondZigzag"), ("DiscGlideRight", "BoxFloatUp"),
               ("CrossDropDown", "RingOrbit")]


def audit_seed(seed: int, head: str, steps: int, modes: list[str], settings: list[dict]) -> list[dict]:
    """Train the reference model of ``seed`` once; visualise with the default config updated by each of
    ``settings`` and score with each of ``modes``. Rows carry their ``setting`` (index into ``settings``)."""
    trained = train_reference(seed, head=head)
    model = LoadedModel(module=trained.model, manifest=trained.manifest, sha256=f"seed{seed}")
    confusion = parse_confusion(trained.confusion, trained.manifest.classes)
    # planted pairs are also asked for explicitly, so that one the ranking misses is still scored and counted
    planted_pairs = [(p.class_name, p.partner) for p in data.PLANTED]
    rows = []
    for k, update in enumerate(settings):
        visualization = VisualizationConfig.model_validate({**VisualizationConfig().model_dump(), **update})
        options = AuditOptions(top_k=3, pairs=CLEAN_PAIRS + planted_pairs, steps=steps, visualization=visualization)
        plan = plan_audit(model.manifest, confusion, options)
        vis = visualise(model, plan.keys, options, partners=plan.partners, device="cpu")
        rows += [{**row, "setting": k} for mode in modes for row in score_seed(seed, model, plan, vis, options, mode)]
    return rows


def score_seed(seed: int, model: LoadedModel, plan, vis, options: AuditOptions, mode: str) -> list[dict]:
    rows = []
    for result in analyse_pairs(model, plan.pairs, vis, options, device="cpu",
                                config=EvidenceConfig(localisation=mode)):
        pair = result.pair
        planted = next((p for p in data.PLANTED if {p.class_name, p.partner} == {pair.a, pair.b}), None)
        localized = [f for f in result.flags if f.code == "LOCALIZED_CUE"]
        specs = {spec.name: spec.modality for spec in model.manifest.inputs}
        # flags about the planted class (or about both classes of the pair) and the stream each one names
        about = [f for f in result.flags if f.stream and f.class_name in (None, planted.class_name)] if planted else []
        rows.append({"mode": mode, "forward_equivalents": result.cost["forward_equivalents"],
                     "seed": seed, "pair": f"{pair.a}/{pair.b}", "rank": pair.rank, "explicit": pair.explicit,
                     "planted": planted.kind if planted else "-",
                     "flags": ",".join(f"{f.code}[{f.stream}{'' if f.class_name is None else ':' + f.class_name[:5]}]"
                                       + ("" if f.severity == "medium" else f"({f.severity})")
                                       for f in result.flags) or "-",
                     "medium_stream_flag": any(f.code.endswith("_ONLY_SEPARATION") and f.severity != "low"
                                               for f in result.flags),
                     "stream_ok": (any(f.stream == planted.stream for f in localized) if planted else None),
                     "named_ok": (any(_names(f, planted, specs) for f in about)
                                  and not any(_names_other(f, planted, specs) for f in about)) if planted else None,
                     "peak_in_region": ([planted.contains(f.peak_xy) for f in localized if f.stream == planted.stream]
                                        if planted else None),
                     "min_softmax": min(v.probability for v in vis),
                     "scores": result.scores.to_json(), "flag_list": [f.to_json() for f in result.flags]})
    return rows


def _names(flag, planted, specs: dict[str, str]) -> bool:
    """Whether ``flag`` points at the planted stream (appearance = the rgb stream, motion = the flow stream)."""
    return specs.get(flag.stream) == ("rgb" if planted.stream == "appearance" else "flow")


def _names_other(flag, planted, specs: dict[str, str]) -> bool:
    return flag.stream in specs and not _names(flag, planted, specs) and flag.code != "CONTEXT_CUE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--head", choices=("flatten", "gap"), default="flatten")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--localisation", nargs="+", choices=("attribution", "exhaustive"),
                        default=["attribution"])
    parser.add_argument("--compare", type=json.loads, nargs="*", default=[],
                        help="VisualizationConfig overrides (JSON objects) to audit the same models with as well")
    parser.add_argument("--json", type=Path, help="also write every row with its scores and flags here "
                                                   "(to recalibrate thresholds without re-running)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    settings = [{}, *args.compare]
    all_rows = [row for seed in args.seeds
                for row in audit_seed(seed, args.head, args.steps, args.localisation, settings)]
    print(f"head={args.head} steps={args.steps} seeds={args.seeds}  ({time.perf_counter() - t0:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps({"head": args.head, "steps": args.steps, "settings": settings,
                                         "rows": all_rows}, indent=1))
    for k, update in enumerate(settings):
        if len(settings) > 1:
            print(f"\n=== visualisation: {'default' if not update else json.dumps(update)}")
        for mode in args.localisation:
            print_table(mode, [r for r in all_rows if r["mode"] == mode and r["setting"] == k], args.steps)


def print_table(mode: str, rows: list[dict], steps: int) -> None:
    print(f"\n--- localisation: {mode}")
    print(f"{'seed':>4} {'rank':>4} {'pair':34s} {'planted':9s} {'loc ok':6s} {'named':6s} {'peak in':8s} flags")
    for r in rows:
        rank = "x" if r["explicit"] else str(r["rank"])
        print(f"{r['seed']:>4} {rank:>4} {r['pair']:34s} {r['planted']:9s} {str(r['stream_ok']):6s} "
              f"{str(r['named_ok']):6s} {str(r['peak_in_region']):8s} {r['flags']}")
    planted = [r for r in rows if r["planted"] != "-"]  # every planted pair of every seed, ranked or not
    in_top3 = sum(1 for r in planted if not r["explicit"] and r["rank"] <= 3)
    ok = sum(1 for r in planted if r["stream_ok"])
    named = sum(1 for r in planted if r["named_ok"])
    peaks = [p for r in planted for p in (r["peak_in_region"] or [])]
    clean = [r for r in rows if r["planted"] == "-" and r["explicit"]]  # the clean control pairs
    print(f"planted pairs in the top 3: {in_top3}/{len(planted)}; flagged LOCALIZED_CUE on the right stream: "
          f"{ok}/{len(planted)}; peak_xy inside the planted region: {sum(peaks)}/{len(peaks)}; "
          f"flags about the planted class name its stream, and only it: {named}/{len(planted)}; "
          f"clean explicit pairs with LOCALIZED_CUE: {sum('LOCALIZED_CUE' in r['flags'] for r in clean)}/{len(clean)}; "
          f"with a medium one-stream flag: {sum(r['medium_stream_flag'] for r in clean)}/{len(clean)}")
    per_pair = sum(r["forward_equivalents"] for r in rows) / max(len(rows), 1)
    visualise_pair = 2 * 9 * steps * 3  # two classes x 9 objectives x steps x (forward + input gradient)
    print(f"scoring: {per_pair:.0f} forward-equivalents per pair = {per_pair / visualise_pair:.3f}x visualising "
          f"the pair ({visualise_pair})")


if __name__ == "__main__":
    main()
