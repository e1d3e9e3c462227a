"""Flag error rates: read from the file the planted benchmark writes, shown as a sentence next to each flag, and
absent (never invented) when the file is missing, unreadable or silent about a code."""
import json

import pytest

from workers.audit.flag_rates import code_rate, load_flag_rates, proportion_interval, rate_sentence
from workers.audit.report_html import render_report_html

RATES = {"generated": "2026-12-02", "split": "heldout", "cases": 20,
         "codes": {"LOCALIZED_CUE": {"precision": 0.9, "recall": 0.75, "fired": 10, "correct": 9, "expected": 12,
                                   "found": 9}}}


def test_rates_are_read_from_the_benchmark_file(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(RATES))
    rates = load_flag_rates(path)
    rate = code_rate("LOCALIZED_CUE", rates)
    assert rate["precision"] == 0.9 and rate["split"] == "heldout" and rate["cases"] == 20
    assert rate["rules_commit"] is None                                              # an older file: not known
    path.write_text(json.dumps({**RATES, "rules_commit": "e465566"}))
    load_flag_rates.cache_clear()
    assert code_rate("LOCALIZED_CUE", load_flag_rates(path))["rules_commit"] == "e465566"
    assert rate["precision_interval"] == pytest.approx([0.596, 0.982], abs=1e-3)     # Wilson, 9 of 10
    assert rate["recall_interval"] == pytest.approx([0.468, 0.911], abs=1e-3)        # Wilson, 9 of 12
    sentence = rate_sentence(rate)
    assert sentence == ("On the planted benchmark (heldout split, 20 cases) this flag was right 90% of the time "
                        "(9 of 10; 95% interval 60%-98%) and it found 75% of the 12 planted cues it is meant for "
                        "(9 found; 95% interval 47%-91%).")
    assert code_rate("CONTEXT_CUE", rates) is None and rate_sentence(None) == ""


def test_a_missing_or_broken_file_gives_no_figures(tmp_path):
    assert load_flag_rates(tmp_path / "absent.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text('{"split": "heldout", "codes": {"X": {"precision": 7}}}')
    assert load_flag_rates(broken) is None


def test_a_code_that_never_fired_states_only_its_recall():
    rate = {"precision": None, "recall": 0.0, "fired": 0, "correct": 0, "expected": 4, "split": "heldout",
            "cases": 20, "generated": "x"}
    assert rate_sentence(rate) == ("On the planted benchmark (heldout split, 20 cases) it found 0% of the 4 "
                                   "planted cues it is meant for.")


def test_the_report_shows_the_rate_under_the_flag(tmp_path):
    from tests.fixtures_report import build_sample_report
    report = build_sample_report(tmp_path)
    flag = report["pairs"][0]["flags"][0]
    flag["benchmark"] = {**RATES["codes"]["LOCALIZED_CUE"], "split": "heldout", "cases": 20, "generated": "x"}
    html = render_report_html(report)
    assert "this flag was right 90% of the time (9 of 10)" in html


def test_the_interval_is_wilsons_and_widens_with_fewer_trials():
    # Wilson by hand for 3 of 5 at z = 1.96: centre (3 + 1.92) / 8.84 = 0.5566, half-width 0.3250
    low, high = proportion_interval(3, 5)
    assert low == pytest.approx(0.2307, abs=1e-3) and high == pytest.approx(0.8824, abs=1e-3)
    wide, narrow = proportion_interval(1, 2), proportion_interval(50, 100)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert proportion_interval(0, 0) is None and proportion_interval(0, 4)[0] == 0.0


def test_the_shipped_file_holds_each_codes_intervals_and_the_web_side_reads_them_without_scipy():
    # the benchmark writes the Wilson intervals beside the counts (planted_cases.write_rates), so the API process
    # builds its flags' rates from numbers: scipy (about 1.3 s of CPU to import) stays out of the web process
    import subprocess
    import sys

    from workers.audit.flag_rates import RATES_PATH
    rates = load_flag_rates(RATES_PATH)
    assert rates is not None and rates.codes
    for code, rate in rates.codes.items():
        got = code_rate(code, rates)
        assert got["precision_interval"] == (list(proportion_interval(rate.correct, rate.fired))
                                             if rate.fired else None), code
        assert got["recall_interval"] == (list(proportion_interval(rate.found, rate.expected))
                                          if rate.expected else None), code
    probe = ("import sys\nfrom workers.audit.flag_rates import code_rate, load_flag_rates, warm_flag_rates\n"
             "warm_flag_rates()\nrates = load_flag_rates()\n"
             "assert all(code_rate(c, rates)['precision_interval'] is not None or not rates.codes[c].fired "
             "for c in rates.codes)\nprint('scipy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_a_file_without_intervals_gets_them_computed(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(RATES))       # written before the benchmark stored intervals
    rate = code_rate("LOCALIZED_CUE", load_flag_rates(path))
    assert rate["precision_interval"] == list(proportion_interval(9, 10))
