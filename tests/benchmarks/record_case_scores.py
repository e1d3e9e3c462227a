"""Writes tests/data/planted_case_scores.json, the recorded scores tests/test_planted_case_flags.py derives flags from
(seconds, no model run): from the rows ``tests/benchmarks/planted_cases.py --split calibration --json ROWS`` wrote,
for each cue family the first planted pair whose cue the current rules find by an expected code (localised too,
where localisation applies), for each local cue family the first pair whose cue the local factor probes alone put
in the right window (``flags.local_probe_flags``; rows of an audit with ``--factor-probes``), and for each
architecture the first clean control pair that gets no flag at all.
Calibration rows only: the held-out split is never used to build a test that the rules are then tuned to pass.

    python tests/benchmarks/record_case_scores.py ROWS.json [ROWS.json ...] [--out tests/data/planted_case_scores.json]

Prints which families and architectures got a row; a family no rule finds gets none.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from planted_cases import (  # the sibling script (this directory is first on sys.path)
    case_inputs,
    load_rows,
    stored_scores,
)

from workers.audit.analysis import PairScores
from workers.audit.flags import FlagThresholds, derive_flags, local_probe_flags
from workers.engine.reference import cases, scoring

OUT = Path(__file__).resolve().parents[1] / "data" / "planted_case_scores.json"


def compact(scores: dict) -> dict:
    """``scores`` (``PairScores.to_json``) with every lever of its factor probes to 4 significant digits: the
    local probes' 16 levers per row are most of a recorded row."""
    def rounded(value):
        if isinstance(value, float):
            return float(f"{value:.4g}")
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    return {**scores, "factor_probes": rounded(scores.get("factor_probes", {}))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path, nargs="+", help="one or more files of calibration rows")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    try:
        rows, _ = load_rows(args.rows, "calibration")
    except ValueError as exc:
        parser.error(f"rows: {exc} (only calibration-split rows may be recorded)")
    specs = case_inputs(rows)
    planted: dict[str, dict] = {}
    by_probe: dict[str, dict] = {}
    clean: dict[str, dict] = {}
    for r, full in zip(rows, stored_scores(rows)):
        cue = cases.Cue.from_json(r["cue"]) if r["cue"] else None
        # the scores with the case's audit baseline, the probes' levers to 4 significant digits: the rows are chosen
        # by the flags of these rounded scores, which are the ones the test derives its flags from
        scores = PairScores.from_json(compact(full.to_json()), r["a"], r["b"])
        flags = derive_flags(scores, specs[r["case_id"]], FlagThresholds())
        record = {**{k: r[k] for k in ("case_id", "architecture", "a", "b", "cue")}, "scores": scores.to_json(),
                  "inputs": [i.model_dump(mode="json") for i in specs[r["case_id"]]]}
        if cue is not None:
            ok = scoring.cue_found_as_expected(flags, cue, r["architecture"]) and (
                not scoring.localisation_applies(cue, r["architecture"])
                or scoring.cue_localised(flags, cue, r["architecture"]))
            if ok and cue.family not in planted:
                planted[cue.family] = record
            if (scoring.localisation_applies(cue, r["architecture"]) and cue.family not in by_probe
                    and scoring.cue_localised(local_probe_flags(scores, FlagThresholds()), cue, r["architecture"])):
                by_probe[cue.family] = record
        elif not flags and r["architecture"] not in clean:
            clean[r["architecture"]] = record
    args.out.write_text(json.dumps({"planted": list(planted.values()), "local_probe": list(by_probe.values()),
                                    "clean": list(clean.values())}, separators=(",", ":")))
    print(f"families: {sorted(planted)}; localised by the local probes: {sorted(by_probe)}; clean pairs without a "
          f"flag for: {sorted(clean)} -> {args.out}")


if __name__ == "__main__":
    main()
