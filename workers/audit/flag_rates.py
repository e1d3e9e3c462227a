"""How often each flag code is right, as measured on the planted-shortcut benchmark (issue 11): read from the file
``tests/benchmarks/planted_cases.py --write-rates`` writes (``flag_rates.json`` beside this module), shown next to
every flag in the report and the API. No file, no figures: nothing is made up for a code the benchmark did not
measure. Each rate comes with its 95% Wilson interval (``proportion_interval``): a precision measured on 5 fired
flags says little, and the reader must see how little. The benchmark writes the intervals into the file, so the web
process reads numbers and never imports scipy; a file without them has them computed on first use."""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

RATES_PATH = Path(__file__).with_name("flag_rates.json")


Interval = Annotated[list[float], Field(min_length=2, max_length=2)]    # [low, high], as JSON writes it


class CodeRate(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    precision: float | None = Field(None, ge=0, le=1)   # share of fired flags that named a planted cue rightly
    recall: float | None = Field(None, ge=0, le=1)      # share of the cues this code is meant for that it found
    fired: int = Field(ge=0)
    correct: int = Field(ge=0)
    expected: int = Field(ge=0)
    found: int | None = Field(None, ge=0)               # the cues it found (recall = found / expected)
    # 95% Wilson intervals of precision and recall, as the benchmark wrote them (``rate_intervals``)
    precision_interval: Interval | None = None
    recall_interval: Interval | None = None


class FlagRates(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    generated: str
    rules_commit: str | None = None     # the commit whose flag rules were measured (absent in older files)
    split: str
    cases: int = Field(ge=0)
    codes: dict[str, CodeRate]


@lru_cache(maxsize=4)
def load_flag_rates(path: Path = RATES_PATH) -> FlagRates | None:
    """The measured rates, or None when the benchmark has not written them (or wrote something unreadable, which
    is logged)."""
    if not path.is_file():
        return None
    try:
        return FlagRates.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


@lru_cache(maxsize=1024)
def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a measured proportion ``successes`` / ``trials`` (scipy's ``binomtest``), or
    None without trials. Pure, so remembered: every flag of every report read asks for the same few intervals, and
    ``binomtest`` costs about a millisecond of CPU each time."""
    if trials <= 0:
        return None
    from scipy.stats import binomtest  # imported here: the API process reads rates but needs scipy only now

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate_intervals(correct: int, fired: int, found: int | None, expected: int) -> dict[str, list[float] | None]:
    """The 95% Wilson intervals of a code's precision (correct / fired) and recall (found / expected): what the
    benchmark writes beside the rates. Pure."""
    intervals = {"precision_interval": proportion_interval(correct, fired),
                 "recall_interval": proportion_interval(found, expected) if found is not None else None}
    return {k: list(v) if v else None for k, v in intervals.items()}


def code_rate(code: str, rates: FlagRates | None) -> dict | None:
    """Plain JSON for one flag code (with the split, case count and rules commit it was measured on, and each
    rate's 95% interval: the file's, else computed), or None. Pure."""
    if rates is None or code not in rates.codes:
        return None
    rate = rates.codes[code]
    stored = {"precision_interval", "recall_interval"} <= rate.model_fields_set
    intervals = {} if stored else rate_intervals(rate.correct, rate.fired, rate.found, rate.expected)
    return {**rate.model_dump(), **intervals, "split": rates.split, "cases": rates.cases,
            "generated": rates.generated, "rules_commit": rates.rules_commit}


def warm_flag_rates() -> None:
    """Read the rates and give every code its intervals now. A file the benchmark wrote holds them; an older one
    has them computed here, and ``proportion_interval`` imports scipy (about 1.3 s of CPU): a process that forks
    workers after building the app (gunicorn's ``preload_app``) then does it once for all of them, instead of each
    worker on its first report read."""
    rates = load_flag_rates()
    for code in rates.codes if rates else ():
        code_rate(code, rates)


def _interval(rate: dict, key: str) -> str:
    interval = rate.get(key)
    return f"; 95% interval {interval[0]:.0%}-{interval[1]:.0%}" if interval else ""


def rate_sentence(rate: dict | None) -> str:
    """'On the planted benchmark ... this flag was right N% of the time ...', or '' without figures. Pure."""
    if not rate or not rate.get("fired") and not rate.get("expected"):
        return ""
    where = f"On the planted benchmark ({rate['split']} split, {rate['cases']} cases)"
    parts = []
    if rate.get("precision") is not None and rate["fired"]:
        parts.append(f"this flag was right {rate['precision']:.0%} of the time ({rate['correct']} of {rate['fired']}"
                     f"{_interval(rate, 'precision_interval')})")
    if rate.get("recall") is not None and rate["expected"]:
        parts.append(f"it found {rate['recall']:.0%} of the {rate['expected']} planted cues it is meant for"
                     + (f" ({rate['found']} found{_interval(rate, 'recall_interval')})" if rate.get("found") is not None
                        else ""))
    return f"{where} {' and '.join(parts)}." if parts else ""
