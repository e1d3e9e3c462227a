"""Choose flag thresholds on the calibration split of the planted-case benchmark, without auditing again: reads the
rows ``tests/benchmarks/planted_cases.py --json`` wrote (each pair's stored scores), derives the flags again under
each candidate ``FlagThresholds`` and prints, per candidate, what the benchmark would count: cues found, found by an
expected code, local cues localised, clean pairs with any flag and with a high-severity one. Refuses rows of the
held-out split: thresholds are chosen on calibration only, and the held-out split is then audited once with them.

    python tests/benchmarks/calibrate_flags.py ROWS.json [ROWS.json ...] [--grid name=v1,v2,... ...]

Each ``--grid`` names a field of ``FlagThresholds`` and the values to try; the candidates are every combination
(default values for the fields not named).
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from planted_cases import load_rows, rescored_outcomes  # the sibling script (this directory is first on sys.path)

from workers.audit.flags import FlagThresholds
from workers.engine.reference import scoring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path, nargs="+", help="one or more files of calibration rows")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2")
    args = parser.parse_args()
    try:
        rows, _ = load_rows(args.rows, "calibration")
    except ValueError as exc:
        parser.error(f"rows: {exc} (only calibration-split rows may be used to choose thresholds)")
    names, values = [], []
    for item in args.grid:
        name, _, text = item.partition("=")
        if name not in FlagThresholds.model_fields:
            parser.error(f"--grid: no threshold named {name!r}")
        kind = type(FlagThresholds.model_fields[name].default)
        try:
            values.append([kind(v) for v in text.split(",")])
        except ValueError:
            parser.error(f"--grid: {name} takes {kind.__name__} values, got {text!r}")
        names.append(name)
    print(f"{len(rows)} rows of {len({r['case_id'] for r in rows})} calibration cases")
    print(" ".join(f"{n:>24s}" for n in names) + "   found  expected  localised  clean-any  clean-high")
    for combo in itertools.product(*values):
        th = FlagThresholds(**dict(zip(names, combo)))
        t = scoring.totals(rescored_outcomes(rows, th))
        print(" ".join(f"{v:>24}" for v in combo)
              + f"   {t['found']:>2}/{t['cues']:<3} {t['as_expected']:>3}/{t['expected']:<4} "
              f"{t['localised']:>4}/{t['local']:<4} {t['clean_any']:>5}/{t['clean']:<4} {t['clean_high']:>5}  "
              f"{ {code[:10]: n for code, n in t['clean_per_code'].items() if n} }")


if __name__ == "__main__":
    main()
