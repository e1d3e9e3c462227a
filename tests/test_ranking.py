"""Pair ranking (DESIGN 3.3) against hand-computed matrices, the explicit-pairs option, and how the ranking
relates to cleanlab's ``find_overlapping_classes`` (see docs/ranking_vs_cleanlab.md)."""
from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest

from workers.audit.confusion import ConfusionMatrix
from workers.audit.ranking import (
    RankedPair,
    audited_partners,
    disjoint,
    parse_pairs_option,
    rank_confused_pairs,
    select_audit_pairs,
)
from workers.engine.errors import InvalidInput

# Equal supports (100 each). Rates: a->b .15, b->a .10, b->c .05, c->b .08, a->c .05, c->a .02.
# Confusion: {a,b} .25 (25 examples), {b,c} .13 (13), {a,c} .07 (7).
EQUAL = ConfusionMatrix(["a", "b", "c"], np.array([[80, 15, 5], [10, 85, 5], [2, 8, 90]]))

# {p,q}: 1/10 + 2/10 = 3/10 with 3 examples; {r,s}: 6/20 = 3/10 with 6 examples. A tie that floating
# point gets wrong (0.1 + 0.2 > 0.3); the count puts {r,s} first. Every other pair has no confusion.
TIED = ConfusionMatrix(
    ["p", "q", "r", "s"],
    np.array([[9, 1, 0, 0], [2, 8, 0, 0], [0, 0, 14, 6], [0, 0, 0, 10]]),
)

# A rare class confused half the time vs. two common classes confused a little.
# Ours: {rare,big} = 5/10 + 0 = .50 ranks above {big,other} = 100/1000 + 50/1000 = .15.
# cleanlab (joint probability): {big,other} = 150/2010 above {rare,big} = 5/2010.
RARE = ConfusionMatrix(
    ["rare", "big", "other"],
    np.array([[5, 5, 0], [0, 900, 100], [0, 50, 950]]),
)


def names(pairs: list[RankedPair]) -> list[tuple[str, str]]:
    return [(p.a, p.b) for p in pairs]


# ------------------------------------------------------------------------------------------- ranking
def test_pairs_rank_by_the_sum_of_both_rates():
    pairs = rank_confused_pairs(EQUAL)
    assert names(pairs) == [("a", "b"), ("c", "b"), ("a", "c")]
    assert [p.rank for p in pairs] == [1, 2, 3]
    first = pairs[0]
    assert (first.a_as_b, first.b_as_a, first.count_ab, first.count_ba) == (0.15, 0.10, 15, 10)
    assert first.confusion == pytest.approx(0.25)
    assert pairs[1].confusion == pytest.approx(0.13) and pairs[2].confusion == pytest.approx(0.07)
    assert not any(p.explicit for p in pairs)


def test_a_is_the_class_more_often_confused_as_b():
    by_pair = {frozenset((p.a, p.b)): p for p in rank_confused_pairs(EQUAL)}
    bc = by_pair[frozenset("bc")]
    assert (bc.a, bc.b, bc.a_as_b, bc.b_as_a, bc.count_ab, bc.count_ba) == ("c", "b", 0.08, 0.05, 8, 5)
    assert all(p.a_as_b >= p.b_as_a for p in by_pair.values())


def test_orientation_with_equal_rates_prefers_the_larger_count_then_class_order():
    # x->y 2/10, y->x 4/20: equal rates, y has more examples confused
    cm = ConfusionMatrix(["x", "y"], np.array([[8, 2], [4, 16]]))
    assert names(rank_confused_pairs(cm)) == [("y", "x")]
    same = ConfusionMatrix(["x", "y"], np.array([[9, 1], [1, 9]]))
    assert names(rank_confused_pairs(same)) == [("x", "y")]


def test_pair_ranking_breaks_ties_by_count():
    pairs = rank_confused_pairs(TIED)
    assert names(pairs) == [("r", "s"), ("q", "p")]
    assert pairs[0].count_ab + pairs[0].count_ba == 6 and pairs[1].count_ab + pairs[1].count_ba == 3
    assert pairs[0].confusion == 0.3
    assert (pairs[1].a_as_b, pairs[1].b_as_a) == (0.2, 0.1)


def test_full_ties_are_broken_by_manifest_order():
    counts = np.array([[9, 1, 0, 0], [0, 10, 0, 0], [0, 0, 9, 1], [0, 0, 0, 10]])
    cm = ConfusionMatrix(["w", "x", "y", "z"], counts)
    assert names(rank_confused_pairs(cm)) == [("w", "x"), ("y", "z")]
    perm = [2, 3, 0, 1]
    reordered = ConfusionMatrix(["y", "z", "w", "x"], counts[np.ix_(perm, perm)])
    assert names(rank_confused_pairs(reordered)) == [("y", "z"), ("w", "x")]


def test_pairs_without_confusion_are_skipped():
    assert len(rank_confused_pairs(TIED, top_k=10)) == 2
    diagonal = ConfusionMatrix(["x", "y", "z"], np.diag([3, 4, 5]))
    assert rank_confused_pairs(diagonal) == []


def test_top_k_keeps_the_best_pairs():
    assert names(rank_confused_pairs(EQUAL, top_k=2)) == [("a", "b"), ("c", "b")]
    assert names(rank_confused_pairs(EQUAL, top_k=1)) == [("a", "b")]
    assert rank_confused_pairs(EQUAL, top_k=0) == []
    # the cut falls inside the exact tie of TIED: the count decides which one is kept
    assert names(rank_confused_pairs(TIED, top_k=1)) == [("r", "s")]


def test_min_support_skips_pairs_with_a_small_class():
    assert names(rank_confused_pairs(RARE, min_support=10)) == [("rare", "big"), ("big", "other")]
    assert names(rank_confused_pairs(RARE, min_support=11)) == [("big", "other")]
    assert rank_confused_pairs(RARE, min_support=1001) == []


def test_min_rate_needs_one_direction_to_reach_it():
    # {b,c}: max(.05, .08) = .08; {a,c}: max(.05, .02) = .05; the boundary is inclusive
    assert names(rank_confused_pairs(EQUAL, min_rate=0.08)) == [("a", "b"), ("c", "b")]
    assert names(rank_confused_pairs(EQUAL, min_rate=0.081)) == [("a", "b")]
    assert names(rank_confused_pairs(EQUAL, min_rate=0.15)) == [("a", "b")]
    assert rank_confused_pairs(EQUAL, min_rate=0.16) == []
    # .06 + .06 = .12 >= .1, but neither direction reaches .1: skipped (the rule is the max, not the sum)
    both = ConfusionMatrix(["x", "y"], np.array([[94, 6], [6, 94]]))
    assert rank_confused_pairs(both, min_rate=0.1) == []
    assert names(rank_confused_pairs(both, min_rate=0.06)) == [("x", "y")]


def test_classes_without_examples_are_never_ranked_even_with_min_support_zero():
    cm = ConfusionMatrix(["x", "y", "z"], np.array([[8, 2, 0], [0, 0, 0], [1, 0, 9]]))
    assert names(rank_confused_pairs(cm, min_support=0)) == [("z", "x")]


@pytest.mark.parametrize("option, value, field", [
    ("top_k", -1, "options.top_k"), ("top_k", 2.5, "options.top_k"),
    ("min_support", -1, "options.min_support"),
    ("min_rate", 1.5, "options.min_rate"), ("min_rate", float("nan"), "options.min_rate"),
])
def test_bad_ranking_options_are_invalid_input(option, value, field):
    with pytest.raises(InvalidInput) as info:
        rank_confused_pairs(EQUAL, **{option: value})
    assert info.value.field == field


def _reference_ranking(cm: ConfusionMatrix, top_k: int, min_support: int, min_rate: float) -> list[tuple]:
    """The rule of DESIGN 3.3 written the slow, obvious way, on exact fractions."""
    n = cm.counts.sum(axis=1)
    rows = []
    for i, j in itertools.combinations(range(len(cm.classes)), 2):
        c_ij, c_ji = int(cm.counts[i, j]), int(cm.counts[j, i])
        if c_ij + c_ji == 0 or min(n[i], n[j]) < max(min_support, 1):
            continue
        r_ij, r_ji = Fraction(c_ij, int(n[i])), Fraction(c_ji, int(n[j]))
        if max(r_ij, r_ji) < Fraction(min_rate):
            continue
        rows.append((-(r_ij + r_ji), -(c_ij + c_ji), i, j))
    return [(i, j) for *_, i, j in sorted(rows)[:top_k]]


def test_ranking_matches_an_exact_reference_on_random_matrices_with_many_ties():
    rng = random.Random(7)
    for _ in range(40):
        k = rng.randint(2, 9)
        counts = np.array([[rng.choice([0, 0, 1, 2, 3, 4]) for _ in range(k)] for _ in range(k)]) * rng.choice([1, 5])
        cm = ConfusionMatrix([f"c{i}" for i in range(k)], counts)
        top_k, min_support, min_rate = rng.randint(1, 8), rng.choice([0, 1, 8]), rng.choice([0.0, 0.1, 0.25])
        got = [tuple(sorted((cm.index(p.a), cm.index(p.b)))) for p in
               rank_confused_pairs(cm, top_k=top_k, min_support=min_support, min_rate=min_rate)]
        assert got == _reference_ranking(cm, top_k, min_support, min_rate)


# -------------------------------------------------------------------------------------- explicit pairs
def test_explicit_pairs_are_appended_with_their_real_rates():
    pairs = select_audit_pairs(EQUAL, top_k=1, explicit=[("c", "a"), ("b", "a"), ("a", "c")])
    assert names(pairs) == [("a", "b"), ("a", "c")]
    ranked, extra = pairs
    assert not ranked.explicit and ranked.rank == 1
    assert extra.explicit and extra.rank == 2
    assert (extra.a_as_b, extra.b_as_a, extra.count_ab, extra.count_ba) == (0.05, 0.02, 5, 2)
    assert extra.confusion == pytest.approx(0.07)


def test_explicit_pairs_without_any_confusion_are_still_audited():
    pairs = select_audit_pairs(TIED, top_k=0, explicit=[("p", "s")])
    assert len(pairs) == 1
    only = pairs[0]
    assert (only.a, only.b, only.rank, only.explicit, only.confusion) == ("p", "s", 1, True, 0.0)


def test_explicit_pairs_bypass_min_support_and_min_rate():
    pairs = select_audit_pairs(RARE, min_support=11, explicit=[("big", "rare")])
    assert names(pairs) == [("big", "other"), ("rare", "big")]
    assert pairs[1].explicit and pairs[1].a_as_b == 0.5


def test_select_without_explicit_pairs_is_the_ranking():
    assert select_audit_pairs(EQUAL, top_k=2) == rank_confused_pairs(EQUAL, top_k=2)


@pytest.mark.parametrize("explicit, position, words", [
    ([("a", "b"), ("a", "bb")], 1, ["unknown class 'bb'", "did you mean 'b'"]),
    ([("zzz", "a")], 0, ["unknown class 'zzz'"]),
    ([("a", "b"), ("c", "c")], 1, ["with itself"]),
    ([("a", "b", "c")], 0, ["two class names"]),
    (["ab"], 0, ["two class names"]),
])
def test_bad_explicit_pairs_name_their_position(explicit, position, words):
    with pytest.raises(InvalidInput) as info:
        select_audit_pairs(EQUAL, explicit=explicit)
    assert info.value.field == f"options.pairs[{position}]"
    for word in words:
        assert word in info.value.message


def test_an_explicit_pair_with_a_class_without_examples_is_rejected():
    cm = ConfusionMatrix(["x", "y", "z"], np.array([[8, 2, 0], [0, 0, 0], [1, 0, 9]]))
    with pytest.raises(InvalidInput) as info:
        select_audit_pairs(cm, explicit=[("x", "y")])
    assert info.value.field == "options.pairs[0]" and "no examples" in info.value.message


def test_parse_pairs_option_reads_colon_pairs():
    assert parse_pairs_option("a:b, c : d") == [("a", "b"), ("c", "d")]
    assert parse_pairs_option("Apply Eye Makeup:Apply Lipstick") == [("Apply Eye Makeup", "Apply Lipstick")]
    assert parse_pairs_option("   ") == []


@pytest.mark.parametrize("text, position", [
    ("a", 0), ("a:b,c", 1), ("a:b:c", 0), ("a:", 0), (":b", 0), ("a:b,", 1), ("a:b,,c:d", 1), ("x:y,a:a", 1),
])
def test_parse_pairs_option_rejects_malformed_items_with_their_position(text, position):
    with pytest.raises(InvalidInput) as info:
        parse_pairs_option(text)
    assert info.value.field == f"options.pairs[{position}]"


# ------------------------------------------------------------------------------------------- cleanlab
def cleanlab_ranking(cm: ConfusionMatrix) -> list[tuple[frozenset, int, float]]:
    """cleanlab's symmetric overlap ranking of a confusion matrix given as a joint distribution:
    ``joint = C / N``; cleanlab adds the two triangles and sorts by joint probability."""
    from cleanlab.dataset import find_overlapping_classes

    total = int(cm.counts.sum())
    frame = find_overlapping_classes(joint=cm.counts / total, num_examples=total, class_names=cm.classes)
    return [
        (frozenset((row["Class Name A"], row["Class Name B"])), int(row["Num Overlapping Examples"]),
         float(row["Joint Probability"]))
        for _, row in frame.iterrows()
    ]


@pytest.mark.parametrize("cm", [EQUAL, TIED, RARE], ids=["equal", "tied", "rare"])
def test_cleanlab_overlap_is_our_pair_count_over_all_examples(cm):
    theirs = {pair: (count, joint) for pair, count, joint in cleanlab_ranking(cm)}
    total = int(cm.counts.sum())
    for ours in rank_confused_pairs(cm, top_k=100):
        count, joint = theirs[frozenset((ours.a, ours.b))]
        assert count == ours.count_ab + ours.count_ba
        assert joint == pytest.approx((ours.count_ab + ours.count_ba) / total)


def test_cleanlab_and_ours_agree_when_supports_are_equal():
    ours = [frozenset((p.a, p.b)) for p in rank_confused_pairs(EQUAL)]
    theirs = [pair for pair, count, _ in cleanlab_ranking(EQUAL) if count > 0]
    assert ours == theirs == [frozenset("ab"), frozenset("bc"), frozenset("ac")]


def test_cleanlab_and_ours_differ_on_a_rare_class_confused_half_the_time():
    ours = [frozenset((p.a, p.b)) for p in rank_confused_pairs(RARE)]
    theirs = [pair for pair, count, _ in cleanlab_ranking(RARE) if count > 0]
    assert ours == [frozenset({"rare", "big"}), frozenset({"big", "other"})]
    assert theirs == [frozenset({"big", "other"}), frozenset({"rare", "big"})]


def test_cleanlab_lists_pairs_without_confusion_and_ours_does_not():
    theirs = cleanlab_ranking(TIED)
    assert len(theirs) == 6  # every unordered pair of 4 classes
    assert sum(1 for _, count, _ in theirs if count == 0) == 4
    assert len(rank_confused_pairs(TIED)) == 2


def test_null_pairs_join_each_class_to_audited_classes_it_is_not_audited_with():
    from workers.audit.ranking import null_pairs

    pairs = [("A", "B"), ("C", "D"), ("E", "F"), ("A", "C")]
    for i in range(len(pairs)):
        got = null_pairs(pairs, i, per_class=2)
        a, b = pairs[i]
        assert 1 <= len(got) <= 4
        assert all(x in (a, b) and c not in (a, b) for x, c in got)
        assert not {frozenset(p) for p in got} & {frozenset(p) for p in pairs}     # never an audited pair
        assert len({frozenset(p) for p in got}) == len(got)
    assert null_pairs(pairs, 0, per_class=2) != null_pairs(pairs, 2, per_class=2)
    assert {c for x, c in null_pairs(pairs, 0, per_class=1) if x == "A"} <= {"D", "E", "F"}   # C is A's partner too
    assert null_pairs([("A", "B")], 0, per_class=2) == []       # one pair: no other class to scan against


def test_the_swap_null_takes_every_audited_class_a_pair_class_is_not_audited_with():
    from workers.audit.ranking import factor_null_pairs

    pairs = [("A", "B"), ("C", "D"), ("E", "F"), ("A", "C")]
    got = factor_null_pairs(pairs, 0)
    assert sorted(got) == [("A", "D"), ("A", "E"), ("A", "F"), ("B", "C"), ("B", "D"), ("B", "E"), ("B", "F")]
    assert factor_null_pairs([("A", "B")], 0) == []


def test_an_audit_too_small_for_the_localisation_null_scans_none():
    from workers.audit.ranking import audit_null_pairs, null_pairs

    three = [("A", "B"), ("C", "D"), ("E", "F")]          # at most 4 scans share no class with a pair
    assert audit_null_pairs(three, per_class=2, min_scans=5) == [[], [], []]
    assert audit_null_pairs(three, per_class=2, min_scans=3)[0] == null_pairs(three, 0, per_class=2)
    five = [*three, ("G", "H"), ("I", "J")]
    assert audit_null_pairs(five, per_class=2, min_scans=5) == [null_pairs(five, i, 2) for i in range(5)]


def test_each_class_is_set_apart_from_the_classes_it_is_audited_with_once_each_in_pair_order():
    assert audited_partners([("A", "B"), ("C", "A"), ("B", "A"), ("D", "E")]) == {
        "A": ["B", "C"], "B": ["A"], "C": ["A"], "D": ["E"], "E": ["D"]}
    assert audited_partners([]) == {}


def test_pairs_are_disjoint_when_they_share_no_class():
    assert disjoint(("A", "B"), ("C", "D")) and not disjoint(("A", "B"), ("B", "C"))
