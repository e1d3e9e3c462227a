"""Pair ranking (DESIGN 3.3): which class pairs an audit looks at, as pure functions of a validated
``ConfusionMatrix``, plus the parsing of the user's explicit ``pairs`` option. No Flask, importable by
workers.

The rule, exactly:

- support ``n_i`` = row sum; rate ``r_ij = C_ij / n_i`` (how often true ``i`` is predicted as ``j``);
- a pair's confusion is ``r_ij + r_ji``, compared exactly (as fractions, so ``1/10 + 2/10`` ties
  ``3/10``); ties are broken by the raw count ``C_ij + C_ji`` (more first), then by class order (the
  pair whose classes come first in the manifest, compared as (lower index, higher index));
- a pair is skipped when either class has support ``< min_support`` (and always when a class has no
  examples: its rates are undefined), when ``max(r_ij, r_ji) < min_rate`` (at least one direction must
  reach the rate), and when ``C_ij + C_ji == 0``;
- ``a`` is the class more often confused AS ``b``: ``a_as_b = r_ab >= b_as_a = r_ba``; on equal rates the
  one with the larger count, then the one first in the manifest.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from workers.audit.confusion import ConfusionMatrix
from workers.engine.errors import InvalidInput

_TIE_TOLERANCE = 1e-9  # float scores this close to the cut are re-compared exactly


@dataclass(frozen=True)
class RankedPair:
    """One audited pair. ``a_as_b`` = r_ab (share of true ``a`` predicted as ``b``), ``count_ab`` = C_ab,
    ``confusion`` = r_ab + r_ba. ``explicit`` is True when the pair is audited only because the user
    asked for it (it did not make the ranking); its ``rank`` then continues after the ranked pairs."""

    a: str
    b: str
    rank: int
    a_as_b: float
    b_as_a: float
    count_ab: int
    count_ba: int
    confusion: float
    explicit: bool = False

    def confusion_json(self) -> dict:
        """The pair's ``confusion`` entry of the report JSON (DESIGN 3.4), as stored with the pair."""
        return {"a_as_b": self.a_as_b, "b_as_a": self.b_as_a, "counts": [self.count_ab, self.count_ba]}

    @classmethod
    def from_confusion_json(cls, a: str, b: str, rank: int, confusion: dict, explicit: bool = False) -> "RankedPair":
        """The inverse of ``confusion_json``: the pair rebuilt from its stored entry."""
        count_ab, count_ba = confusion["counts"]
        return cls(a=a, b=b, rank=rank, a_as_b=confusion["a_as_b"], b_as_a=confusion["b_as_a"],
                   count_ab=count_ab, count_ba=count_ba, confusion=confusion["a_as_b"] + confusion["b_as_a"],
                   explicit=explicit)


def _check_options(top_k: int, min_support: int, min_rate: float) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise InvalidInput(f"top_k must be a whole number >= 0, got {top_k!r}", field="options.top_k")
    if isinstance(min_support, bool) or not isinstance(min_support, (int, np.integer)) or min_support < 0:
        raise InvalidInput(f"min_support must be a whole number >= 0, got {min_support!r}",
                           field="options.min_support")
    if (isinstance(min_rate, bool) or not isinstance(min_rate, (int, float, np.floating))
            or not math.isfinite(min_rate) or not 0.0 <= min_rate <= 1.0):
        raise InvalidInput(f"min_rate must be a number in [0, 1], got {min_rate!r}", field="options.min_rate")


def _pair(cm: ConfusionMatrix, i: int, j: int, rank: int, explicit: bool) -> RankedPair:
    """The pair of classes ``i`` and ``j`` (both with support > 0), oriented so that a_as_b >= b_as_a."""
    n = cm.support
    c_ij, c_ji = int(cm.counts[i, j]), int(cm.counts[j, i])
    r_ij, r_ji = Fraction(c_ij, int(n[i])), Fraction(c_ji, int(n[j]))
    if (r_ji, c_ji, -j) > (r_ij, c_ij, -i):
        i, j, c_ij, c_ji, r_ij, r_ji = j, i, c_ji, c_ij, r_ji, r_ij
    return RankedPair(
        a=cm.classes[i], b=cm.classes[j], rank=rank, a_as_b=float(r_ij), b_as_a=float(r_ji),
        count_ab=c_ij, count_ba=c_ji, confusion=float(r_ij + r_ji), explicit=explicit,
    )


def rank_confused_pairs(
    cm: ConfusionMatrix, *, top_k: int = 10, min_support: int = 1, min_rate: float = 0.0
) -> list[RankedPair]:
    """The ``top_k`` most confused unordered pairs, best first, ranks from 1 (rule in the module doc)."""
    _check_options(top_k, min_support, min_rate)
    counts = cm.counts
    n = cm.support
    k = len(cm.classes)
    if top_k == 0 or k < 2:
        return []
    rates = counts / np.maximum(n, 1)[:, None]  # rows of classes without examples are never used
    eligible = n >= max(int(min_support), 1)
    iu, ju = np.triu_indices(k, 1)
    r_ij, r_ji = rates[iu, ju], rates[ju, iu]
    keep = (
        (counts[iu, ju] + counts[ju, iu] > 0)
        & eligible[iu] & eligible[ju]
        & (np.maximum(r_ij, r_ji) >= float(min_rate))
    )
    iu, ju, score = iu[keep], ju[keep], (r_ij + r_ji)[keep]
    if len(score) > top_k:
        # Cheap float cut first; everything within rounding of the cut is re-compared exactly below.
        cut = -np.partition(-score, top_k - 1)[top_k - 1]
        near = score >= cut - _TIE_TOLERANCE
        iu, ju = iu[near], ju[near]

    def exact_key(pair: tuple[int, int]) -> tuple[Fraction, int, int, int]:
        i, j = pair
        c_ij, c_ji = int(counts[i, j]), int(counts[j, i])
        confusion = Fraction(c_ij, int(n[i])) + Fraction(c_ji, int(n[j]))
        return (-confusion, -(c_ij + c_ji), i, j)

    order = sorted(zip(iu.tolist(), ju.tolist()), key=exact_key)[:top_k]
    return [_pair(cm, i, j, rank, explicit=False) for rank, (i, j) in enumerate(order, start=1)]


def select_audit_pairs(
    cm: ConfusionMatrix,
    *,
    top_k: int = 10,
    min_support: int = 1,
    min_rate: float = 0.0,
    explicit: Sequence[tuple[str, str]] = (),
) -> list[RankedPair]:
    """The pairs an audit looks at: ``rank_confused_pairs`` plus the user's ``explicit`` pairs, whatever
    their confusion. An explicit pair already ranked keeps its rank (``explicit=False``); the others are
    appended in the order given with ``explicit=True``, their real rates, the usual orientation and ranks
    continuing the ranked ones. Repeats ("a:b" and "b:a") count once. An unknown class, a class paired
    with itself or a class without examples raises ``InvalidInput`` with field ``options.pairs[i]``."""
    ranked = rank_confused_pairs(cm, top_k=top_k, min_support=min_support, min_rate=min_rate)
    index = {name: i for i, name in enumerate(cm.classes)}
    support = cm.support
    chosen = {frozenset((p.a, p.b)) for p in ranked}
    pairs = list(ranked)
    for position, pair in enumerate(explicit):
        field = f"options.pairs[{position}]"
        if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(name, str) for name in pair):
            raise InvalidInput(f"pair {position} must be two class names, got {pair!r}", field=field)
        for name in pair:
            if name not in index:
                close = difflib.get_close_matches(name, cm.classes, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InvalidInput(f"pair {position}: unknown class {name!r}{hint}", field=field)
        x, y = pair
        if x == y:
            raise InvalidInput(f"pair {position} pairs class {x!r} with itself", field=field)
        for name in pair:
            if support[index[name]] == 0:
                raise InvalidInput(f"pair {position}: class {name!r} has no examples in the confusion matrix, "
                                   "so its confusion rates are undefined", field=field)
        key = frozenset(pair)
        if key in chosen:
            continue
        chosen.add(key)
        pairs.append(_pair(cm, index[x], index[y], rank=len(pairs) + 1, explicit=True))
    return pairs


def parse_pairs_option(text: str) -> list[tuple[str, str]]:
    """``"a:b,c:d"`` -> ``[("a", "b"), ("c", "d")]``; blanks around names are dropped, empty text gives
    ``[]``. A malformed item (no ``:`` or several, an empty name, a class with itself) raises
    ``InvalidInput`` with field ``options.pairs[i]``. Class names containing ``,`` or ``:`` cannot be
    written in this form; pass such pairs as a JSON list instead."""
    if not isinstance(text, str):
        raise InvalidInput(f"pairs must be text like 'a:b,c:d', got {type(text).__name__}", field="options.pairs")
    if not text.strip():
        return []
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate(text.split(",")):
        field = f"options.pairs[{position}]"
        parts = [part.strip() for part in item.split(":")]
        if len(parts) != 2 or not all(parts):
            raise InvalidInput(f"pair {position} {item.strip()!r} must be two class names joined by ':', "
                               "as in 'a:b,c:d'", field=field)
        if parts[0] == parts[1]:
            raise InvalidInput(f"pair {position} pairs class {parts[0]!r} with itself", field=field)
        pairs.append((parts[0], parts[1]))
    return pairs


def null_pairs(pairs: Sequence[tuple[str, str]], index: int, per_class: int) -> list[tuple[str, str]]:
    """The class pairs whose occlusion scans give the model's own null for ``LOCALIZED_CUE`` (DESIGN 4.4),
    measured with pair ``pairs[index]``'s evidence: for each of its two classes, ``per_class`` other audited
    classes it is *not* audited with (the audit's pairs are the model's most confused ones, so these are pairs it
    tells apart by whatever honestly sets classes apart). Candidates are taken in order of first appearance in
    ``pairs``, starting at an offset that moves with ``index``, so that the audit's pairs scan different null
    pairs between them. Each pair comes once, as (audited class, other class). Pure."""
    a, b = pairs[index]
    classes = list(dict.fromkeys(c for p in pairs for c in p))
    audited = {frozenset(p) for p in pairs}
    out: list[tuple[str, str]] = []
    for j, x in enumerate((a, b)):
        candidates = [c for c in classes if c not in (a, b) and frozenset((x, c)) not in audited]
        if not candidates:
            continue
        start = (2 * index + j) * per_class
        for k in range(min(per_class, len(candidates))):
            c = candidates[(start + k) % len(candidates)]
            if all(frozenset((x, c)) != frozenset(p) for p in out):
                out.append((x, c))
    return out


def factor_null_pairs(pairs: Sequence[tuple[str, str]], index: int) -> list[tuple[str, str]]:
    """Every (class of pair ``pairs[index]``, other audited class it is not audited with): the null of the global
    factors' swap tests (``GLOBAL_APPEARANCE_CUE``). A swap costs one evaluation, not an
    occlusion scan, so it takes every such pair, not ``null_pairs``' few. Pure."""
    return null_pairs(pairs, index, per_class=len({c for p in pairs for c in p}))


def audited_partners(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """class -> the classes it is audited with, in the order of ``pairs``: what its visualisations are set apart
    from (``VisualizationConfig.partner_contrast``). Pure."""
    out: dict[str, list[str]] = {}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            if y not in out.setdefault(x, []):
                out[x].append(y)
    return out


def disjoint(pair: Sequence[str], other: Sequence[str]) -> bool:
    """Whether two class pairs share no class: the null scans a pair's ``LOCALIZED_CUE`` is judged against are
    the ones disjoint from it (a scan holding one of its classes holds that class's cue, if it has one). Pure."""
    return not set(pair) & set(other)


def audit_null_pairs(pairs: Sequence[tuple[str, str]], per_class: int, min_scans: int) -> list[list[tuple[str, str]]]:
    """Each pair's ``null_pairs``, or none at all when no pair of the audit would have ``min_scans`` distinct null
    scans sharing no class with it (the ones its ``LOCALIZED_CUE`` is judged against): an audit of 3 pairs has at
    most 4, and scanning them would cost without deciding anything. Pure."""
    per_pair = [null_pairs(pairs, i, per_class) for i in range(len(pairs))]
    scans = {frozenset(p) for got in per_pair for p in got}
    if not any(sum(1 for key in scans if disjoint(key, pair)) >= min_scans for pair in pairs):
        return [[] for _ in pairs]
    return per_pair
