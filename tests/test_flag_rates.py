"""Flag error rates: read from the file the planted benchmark writes, shown as a sentence next to each flag, and
absent (never invented) when the file is missing, unreadable or silent about a code."""
import json

from workers.audit.flag_rates import code_rate, load_flag_rates, rate_sentence
from workers.audit.report_html import render_report_html

RATES = {"generated": "2026-12-02", "split": "heldout", "cases": 20,
         "codes": {"LOCALIZED_CUE": {"precision": 0.9, "recall": 0.75, "fired": 10, "correct": 9, "expected": 12}}}


def test_rates_are_read_from_the_benchmark_file(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(RATES))
    rates = load_flag_rates(path)
    rate = code_rate("LOCALIZED_CUE", rates)
    assert rate["precision"] == 0.9 and rate["split"] == "heldout" and rate["cases"] == 20
    sentence = rate_sentence(rate)
    assert sentence == ("On the planted benchmark (heldout split, 20 cases) this flag was right 90% of the time "
                        "(9 of 10) and it found 75% of the 12 planted cues it is meant for.")
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
