"""Flag rules on hand-made scores: each fires on its own evidence and nothing else, and a pair never carries two
flags with the same (code, stream), the key a review is stored under."""
import json

import numpy as np
import pytest

from workers.audit.analysis import Localisation, PairScores, StreamScores
from workers.audit.flags import FlagThresholds, derive_flags, one_stream_classes
from workers.engine.manifest import InputSpec

SPECS = [InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 8, 32, 32]),
         InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 8, 32, 32])]


def _loc(favours="A", whole=0.5, peak=0.1, separation=1.2, xy=(0.1, 0.1)) -> Localisation:
    return Localisation(favours=favours, whole_stream_drop=whole, peak_drop=peak, peak_share=peak / whole,
                        peak_separation=separation, peak_xy=xy)


def _stream(loc: Localisation) -> StreamScores:
    return StreamScores(feature_similarity=0.2, separation_margin=10.0, separation_share=0.5,
                        difference_concentration=0.1, difference_peak_xy=(0.5, 0.5), localisation=loc,
                        difference_map=np.zeros((4, 4)))


def _scores(app: Localisation | None = None, mot: Localisation | None = None, evidence=None,
            motion_reliance=None, target_softmax=None, stream_share=None) -> PairScores:
    return PairScores(
        a="A", b="B",
        cross_activation={"a_on_b": 0.0, "b_on_a": 0.0, "a_on_b_logit_ratio": 0.0, "b_on_a_logit_ratio": 0.0},
        streams={"appearance": _stream(app or _loc()), "motion": _stream(mot or _loc())},
        stream_reliance={"A": {"appearance": 0.5, "motion": 0.5}, "B": {"appearance": 0.5, "motion": 0.5}},
        stream_evidence=evidence or {"A": {"appearance": 5.0, "motion": 5.0}, "B": {"appearance": 5.0, "motion": 5.0}},
        motion_reliance=motion_reliance or {"A": 0.5, "B": 0.5},
        speed_invariance={}, overall_feature_similarity=0.1,
        target_softmax=target_softmax or {"A": 0.99, "B": 0.99}, stream_share=stream_share or {})


def _codes(flags):
    return [(f.code, f.stream) for f in flags]


def test_balanced_scores_raise_no_flag():
    assert derive_flags(_scores(), SPECS) == []


def test_localized_cue_needs_a_window_that_stands_out_and_carries_enough_of_the_margin():
    th = FlagThresholds()
    fires = _scores(app=_loc(separation=th.localized_separation, peak=0.05, xy=(0.12, 0.12)))
    [flag] = derive_flags(fires, SPECS)
    assert (flag.code, flag.stream, flag.class_name, flag.peak_xy) == ("LOCALIZED_CUE", "appearance", "A", (0.12, 0.12))
    assert "top-left" in flag.message and "A's training clips" in flag.message
    assert derive_flags(_scores(app=_loc(separation=th.localized_separation * 0.99, peak=0.05)), SPECS) == []
    assert derive_flags(_scores(app=_loc(separation=10.0, peak=th.localized_min_peak_drop / 2)), SPECS) == []
    assert derive_flags(_scores(app=_loc(separation=10.0, peak=0.05, whole=0.1)), SPECS) == []


def test_one_stream_classes_is_per_class_and_ignores_negative_evidence():
    evidence = {"A": {"appearance": 9.5, "motion": -3.0}, "B": {"appearance": 1.0, "motion": 9.0}}
    assert one_stream_classes(evidence, 0.9) == {"appearance": [("A", 1.0)], "motion": [("B", 0.9)]}
    assert one_stream_classes({"A": {"appearance": -1.0, "motion": 0.0}}, 0.9) == {}


def test_one_stream_flags_name_the_class_and_stream_and_merge_when_both_classes_share_it():
    own = derive_flags(_scores(evidence={"A": {"appearance": 20.0, "motion": -2.0},
                                         "B": {"appearance": 5.0, "motion": 5.0}}), SPECS)
    [flag] = own
    assert (flag.code, flag.stream, flag.class_name) == ("APPEARANCE_ONLY_SEPARATION", "appearance", "A")
    assert "reads as B" in flag.message
    both = derive_flags(_scores(evidence={"A": {"appearance": 0.1, "motion": 9.0},
                                          "B": {"appearance": 0.0, "motion": 4.0}}), SPECS)
    assert _codes(both) == [("MOTION_ONLY_SEPARATION", "motion")]
    assert both[0].class_name is None and "A is told" in both[0].message and "B is told" in both[0].message
    assert both[0].severity == "low"  # both classes on motion: how the model separates pairs anyway


def _baseline(median: float, others: int = 6) -> dict:
    """What ``analysis.stream_share_baseline`` gives a class whose streams the model weighs as ``median`` on
    appearance (and the rest on motion) against its other classes."""
    return {"appearance": {"partner": 0.0, "others_median": median, "others_high": median, "others": others},
            "motion": {"partner": 0.0, "others_median": 1 - median, "others_high": 1 - median, "others": others}}


def test_one_stream_flag_fires_only_when_the_pair_leans_on_the_stream_more_than_the_model_does():
    evidence = {"A": {"appearance": 20.0, "motion": -2.0}, "B": {"appearance": 3.0, "motion": 6.0}}
    th = FlagThresholds()
    quirk = derive_flags(_scores(evidence=evidence, stream_share={"A": _baseline(0.4), "B": _baseline(0.4)}), SPECS)
    assert [(f.code, f.class_name, f.severity) for f in quirk] == [("APPEARANCE_ONLY_SEPARATION", "A", "medium")]
    assert "median of 6" in quirk[0].message
    # the same share is how this model tells A from every class: no finding
    usual = _scores(evidence=evidence,
                    stream_share={"A": _baseline(1.0 - th.only_share_excess / 2), "B": _baseline(0.4)})
    assert derive_flags(usual, SPECS) == []
    # just past the excess fires, just short of it does not
    edge = 1.0 - th.only_share_excess
    assert derive_flags(_scores(evidence=evidence, stream_share={"A": _baseline(edge + 0.01)}), SPECS) == []
    assert len(derive_flags(_scores(evidence=evidence, stream_share={"A": _baseline(edge - 0.01)}), SPECS)) == 1


def test_a_motion_driven_model_gets_no_motion_flag_on_every_pair():
    evidence = {"A": {"appearance": 0.1, "motion": 9.0}, "B": {"appearance": 0.0, "motion": 4.0}}
    share = {"A": _baseline(0.05), "B": _baseline(0.02)}     # motion carries every class of this model
    assert derive_flags(_scores(evidence=evidence, stream_share=share), SPECS) == []


def test_without_enough_other_classes_the_one_stream_flag_is_low():
    evidence = {"A": {"appearance": 20.0, "motion": -2.0}, "B": {"appearance": 3.0, "motion": 6.0}}
    [flag] = derive_flags(_scores(evidence=evidence, stream_share={"A": _baseline(0.4, others=1)}), SPECS)
    assert flag.severity == "low" and "too few other classes" in flag.message


@pytest.mark.parametrize("reliance", [{"A": 0.01, "B": 0.02}, {"A": 0.01, "B": 0.5}])
def test_context_cue_is_one_flag_per_pair(reliance):
    on = FlagThresholds(context_motion_reliance=0.1)        # off by default (module docstring)
    flags = derive_flags(_scores(motion_reliance=reliance), SPECS, on)
    assert _codes(flags) == [("CONTEXT_CUE", "appearance")]
    assert derive_flags(_scores(motion_reliance=reliance), SPECS) == []


def test_no_two_flags_of_a_pair_share_a_review_key():
    loud = _scores(app=_loc(separation=9.0, peak=0.3), mot=_loc(favours="B", separation=9.0, peak=0.3),
                   evidence={"A": {"appearance": 0.0, "motion": 9.0}, "B": {"appearance": 0.0, "motion": 9.0}},
                   motion_reliance={"A": 0.0, "B": 0.0})
    keys = _codes(derive_flags(loud, SPECS, FlagThresholds(context_motion_reliance=0.1)))
    assert len(keys) == len(set(keys)) >= 4


def test_a_class_whose_visualisations_are_not_that_class_is_flagged_weak():
    [flag] = derive_flags(_scores(target_softmax={"A": 0.99, "B": 0.003}), SPECS)
    assert (flag.code, flag.stream, flag.class_name) == ("WEAK_VISUALISATION", None, "B")
    assert "0.003" in flag.message
    assert derive_flags(_scores(target_softmax={"A": 0.6, "B": 0.5}), SPECS) == []


def _shared(similarity: float, ratios: tuple[float, float]) -> PairScores:
    s = _scores()
    return PairScores(**{**s.__dict__, "overall_feature_similarity": similarity,
                         "cross_activation": {**s.cross_activation, "a_on_b_logit_ratio": ratios[0],
                                              "b_on_a_logit_ratio": ratios[1]}})


def test_shared_evidence_fires_on_coinciding_features_or_mutual_cross_activation():
    th = FlagThresholds()
    [by_features] = derive_flags(_shared(th.shared_feature_similarity, (0.0, 0.0)), SPECS)
    assert (by_features.code, by_features.stream, by_features.severity) == ("SHARED_EVIDENCE", None, "medium")
    assert f"{th.shared_feature_similarity:.2f}" in by_features.message
    [by_activation] = derive_flags(_shared(0.1, (th.shared_logit_ratio, th.shared_logit_ratio + 0.2)), SPECS)
    assert by_activation.code == "SHARED_EVIDENCE"
    # one-sided cross-activation (only a's picture excites b) is not shared evidence
    assert derive_flags(_shared(0.1, (th.shared_logit_ratio + 0.4, th.shared_logit_ratio - 0.01)), SPECS) == []
    assert derive_flags(_shared(th.shared_feature_similarity - 0.01, (0.0, 0.0)), SPECS) == []


def test_localized_cue_found_from_the_partners_side_names_the_class_that_holds_the_cue():
    th = FlagThresholds()
    scores = _scores(app=_loc(favours="B", separation=th.localized_separation * 3, peak=0.2, xy=(0.1, 0.1)))
    scores.streams["appearance"].cue_class = "A"   # A's visualisations hold the overlay; found by swapping it into B's
    [flag] = derive_flags(scores, SPECS)
    assert flag.class_name == "A"
    assert "check whether A's training clips" in flag.message and "that B's lack" in flag.message
    # the cost is B's, found on B's side: the message says whose margin over whom
    assert "costs B 20% of its margin over A" in flag.message


def test_cue_class_is_the_class_whose_visualisations_stand_out_in_the_window():
    from workers.audit.analysis import cue_class

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.2, size=(3, 3, 2, 32, 32))
    b = rng.normal(0, 0.2, size=(3, 3, 2, 32, 32))
    a[..., 2:6, 2:6] += 2.0  # an overlay in the top-left corner of class A only
    loc = _loc(favours="B", xy=(4 / 32, 4 / 32))
    assert cue_class({"appearance": a}, {"appearance": b}, SPECS[0], loc, ("A", "B")) == "A"
    assert cue_class({"appearance": b}, {"appearance": a}, SPECS[0], loc, ("A", "B")) == "B"


def test_stream_share_baseline_compares_the_partner_with_the_models_other_classes():
    from workers.audit.analysis import stream_share_baseline
    margins = {"appearance": {"B": 6.0, "C": 1.0, "D": 1.0, "E": -2.0},
               "motion": {"B": -1.0, "C": 3.0, "D": 1.0, "E": 0.0}}
    got = stream_share_baseline(margins, partner="B")
    assert got["appearance"]["partner"] == 1.0 and got["motion"]["partner"] == 0.0
    # C: 1/(1+3) = 0.25, D: 0.5; E gives no positive margin on any stream and is left out
    assert got["appearance"]["others"] == 2 and np.isclose(got["appearance"]["others_median"], 0.375)
    assert np.isclose(got["motion"]["others_median"], 0.625)


CLIP = [InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 8, 32, 32])]


def _single(static_share) -> PairScores:
    s = _scores(evidence={"A": {"clip": 5.0}, "B": {"clip": 5.0}})
    s.streams = {"clip": s.streams["appearance"]}
    s.static_share = static_share
    return s


def test_a_single_stream_model_names_still_frames_or_motion_against_its_own_baseline():
    def base(partner, median, others=6):
        return {"partner": partner, "others_median": median, "others": others}

    still = derive_flags(_single({"A": base(0.95, 0.3), "B": base(0.4, 0.3)}), CLIP)
    assert [(f.code, f.stream, f.class_name) for f in still] == [("APPEARANCE_ONLY_SEPARATION", "clip", "A")]
    moving = derive_flags(_single({"A": base(0.05, 0.6), "B": base(0.5, 0.6)}), CLIP)
    assert [(f.code, f.stream, f.class_name) for f in moving] == [("MOTION_ONLY_SEPARATION", "clip", "A")]
    # a model that needs motion for every class: no finding; nor without a baseline
    assert derive_flags(_single({"A": base(0.05, 0.1), "B": base(0.1, 0.1)}), CLIP) == []
    assert derive_flags(_single({"A": base(0.05, 0.6, others=1)}), CLIP) == []


def test_static_share_baseline_reads_what_survives_without_motion():
    from workers.audit.analysis import static_share_baseline
    full = {"B": 4.0, "C": 2.0, "D": 5.0, "E": -1.0}
    static = {"B": 0.4, "C": 2.5, "D": 2.5, "E": 3.0}
    got = static_share_baseline(full, static, partner="B")
    assert np.isclose(got["partner"], 0.1) and got["others"] == 2 and np.isclose(got["others_median"], 0.75)


def test_scores_come_back_from_their_json_with_the_same_flags():
    from workers.audit.analysis import PairScores
    s = _scores(app=_loc(separation=4.0, peak=0.05, xy=(0.12, 0.12)),
                evidence={"A": {"appearance": 20.0, "motion": -2.0}, "B": {"appearance": 3.0, "motion": 6.0}},
                stream_share={"A": _baseline(0.4), "B": _baseline(0.4)})
    back = PairScores.from_json(s.to_json(), "A", "B")
    assert derive_flags(back, SPECS) == derive_flags(s, SPECS) and len(derive_flags(s, SPECS)) == 2


def test_share_baselines_without_other_classes_are_strict_json():
    import json

    from workers.audit.analysis import static_share_baseline, stream_share_baseline
    lone = stream_share_baseline({"appearance": {"B": 1.0}, "motion": {"B": 2.0}}, partner="B")
    still = static_share_baseline({"B": 1.0}, {"B": 0.5}, partner="B")
    json.dumps([lone, still], allow_nan=False)          # PostgreSQL's JSON refuses NaN
    assert lone["appearance"]["others"] == 0 and still["others"] == 0


def _pair(stream_share: dict, static_share: dict | None = None, global_factors: dict | None = None):
    """A pair's ``analysis.PairShares``, its two classes taken from the shares' keys."""
    from workers.audit.analysis import PairShares
    a, b = sorted(stream_share or static_share)
    return PairShares(a, b, stream_share, static_share or {}, global_factors or {})


def test_audit_baseline_is_the_median_over_the_audits_classes_outside_the_pair():
    from workers.audit.analysis import audit_baseline
    values = {"A": 1.0, "B": 1.0, "C": 0.2, "D": 0.4, "E": 0.9}
    assert audit_baseline(values, ("A", "B")) == {"median": 0.4, "classes": 3}
    assert audit_baseline({"A": 1.0, "B": 0.5}, ("A", "B")) is None


def test_audit_leanings_gather_each_classs_own_median_once_and_leave_the_pair_out():
    from workers.audit.analysis import AuditLeanings
    pair_ab = _pair({"A": _baseline(0.1), "B": _baseline(0.2)})
    pair_cd = _pair({"C": _baseline(0.7), "D": _baseline(0.9)},
                    {"C": {"partner": 0.5, "others_median": 0.3, "others": 4}})
    pair_ce = _pair({"C": _baseline(0.0), "E": _baseline(0.8)})     # C again: its first value stays
    leanings = AuditLeanings.gather([pair_ab, pair_cd, pair_ce])
    assert leanings.stream["appearance"] == {"A": 0.1, "B": 0.2, "C": 0.7, "D": 0.9, "E": 0.8}
    per_stream, static, _ = leanings.baseline_for(("A", "B"))
    assert per_stream["appearance"] == {"median": 0.8, "classes": 3}
    assert np.isclose(per_stream["motion"]["median"], 0.2) and static == {"median": 0.3, "classes": 1}


def test_audit_leanings_read_back_from_their_json_give_every_pair_the_same_baselines():
    # the service's score stage gathers them once per audit and stores them (workers.tasks.stages.stored_leanings)
    import json

    from workers.audit.analysis import AuditLeanings
    change = {"margin": 2.0, "delta": 1.5, "share": 0.75, "scale": 3.0}
    factors = {"appearance": {"colour": {"holder": "A", "classes": {"A": change, "B": {**change, "delta": 0.3}}}}}
    pairs = [_pair({"A": _baseline(0.1), "B": _baseline(0.2)}, {"A": {"partner": 0.9, "others_median": 0.6,
                                                                      "others": 4}}, factors),
             _pair({"D": _baseline(0.7), "C": _baseline(0.9)}, None, factors),
             _pair({"E": _baseline(0.4), "F": _baseline(0.5)}, None, factors)]
    leanings = AuditLeanings.gather(pairs)
    back = AuditLeanings.from_json(json.loads(json.dumps(leanings.to_json(), allow_nan=False)))
    assert back == leanings and back.factors["appearance"]["colour"][("C", "D")] == 0.5
    for pair in (("A", "B"), ("C", "D"), ("X", "Y")):
        assert back.baseline_for(pair) == leanings.baseline_for(pair)


def test_a_class_learnt_by_its_cue_is_judged_against_the_audits_other_classes_not_its_own_baseline():
    # A is told from B and from every other class by its motion alone: its own baseline leans on motion as much as
    # its margin over B does (the cue is how the model tells A from everything), which hides the shortcut
    from workers.audit.analysis import AuditLeanings, with_audit_baseline
    evidence = {"A": {"appearance": -1.0, "motion": 30.0}, "B": {"appearance": 5.0, "motion": 5.0}}
    cue_class = {"A": _baseline(0.0), "B": _baseline(0.6)}
    alone = _scores(evidence=evidence, stream_share=cue_class)
    assert derive_flags(alone, SPECS) == []
    others = [_pair({"C": _baseline(0.6), "D": _baseline(0.5)}), _pair({"E": _baseline(0.7), "F": _baseline(0.4)})]
    leanings = AuditLeanings.gather([_pair(cue_class), *others])
    [flag] = derive_flags(with_audit_baseline(alone, leanings), SPECS)
    assert (flag.code, flag.stream, flag.class_name, flag.severity) == \
        ("MOTION_ONLY_SEPARATION", "motion", "A", "medium")
    assert "the audit's other 4 classes get 45% of their margins from their motion" in flag.message
    # an audit whose other classes lean on motion as much: how the model works, no finding
    motion_model = AuditLeanings.gather([_pair(cue_class), _pair({"C": _baseline(0.0), "D": _baseline(0.05)}),
                                         _pair({"E": _baseline(0.1), "F": _baseline(0.0)})])
    assert derive_flags(with_audit_baseline(alone, motion_model), SPECS) == []
    # fewer other audited classes than ``only_min_other_classes``: the class's own baseline decides, as before
    few = AuditLeanings.gather([_pair(cue_class), _pair({"C": _baseline(0.6), "D": _baseline(0.6)})])
    assert derive_flags(with_audit_baseline(alone, few), SPECS) == []


def test_a_single_stream_class_is_judged_against_the_audits_other_classes():
    from workers.audit.analysis import AuditLeanings, with_audit_baseline

    def base(partner, median, others=6):
        return {"partner": partner, "others_median": median, "others": others}

    own = {"A": base(0.02, 0.05), "B": base(0.5, 0.6)}     # A needs motion for everything: its cue is motion
    s = _single(own)
    assert derive_flags(s, CLIP) == []
    others = [_pair({}, {"C": base(0.5, 0.7), "D": base(0.5, 0.5)}),
              _pair({}, {"E": base(0.5, 0.6), "F": base(0.5, 0.6)})]
    [flag] = derive_flags(with_audit_baseline(s, AuditLeanings.gather([_pair({}, own), *others])), CLIP)
    assert (flag.code, flag.class_name) == ("MOTION_ONLY_SEPARATION", "A")
    assert "the audit's other 4 classes get 60% of their margins with motion removed" in flag.message


def test_the_audit_baseline_comes_back_from_the_scores_json():
    from workers.audit.analysis import AuditLeanings, with_audit_baseline
    share = {"A": _baseline(0.0), "B": _baseline(0.6)}
    others = [_pair({"C": _baseline(0.6), "D": _baseline(0.5)}), _pair({"E": _baseline(0.7), "F": _baseline(0.7)})]
    leanings = AuditLeanings.gather([_pair(share), *others])
    s = with_audit_baseline(_scores(evidence={"A": {"appearance": -1.0, "motion": 30.0},
                                              "B": {"appearance": 5.0, "motion": 5.0}}, stream_share=share), leanings)
    back = PairScores.from_json(s.to_json(), "A", "B")
    assert back.audit_stream_share == s.audit_stream_share and len(derive_flags(back, SPECS)) == 1


def test_localized_cue_is_judged_against_the_models_own_null_when_the_audit_has_one():
    from dataclasses import replace

    from workers.audit.flags import empirical_p_value

    th = FlagThresholds()
    assert empirical_p_value(5.0, [1.0, 2.0, 6.0, None]) == 3 / 5      # 6.0 and the infinite draw reach it
    assert empirical_p_value(5.0, []) == 1.0
    quiet = [1.1, 1.3, 1.2, 1.5, 1.4, 1.6, 1.2, 1.3, 1.1, 1.4]          # a model whose scans rarely stand out
    busy = [3.5, 4.0, 6.0, 5.0, 2.5, 8.0, 3.0, 4.5, 7.0, 5.5]          # one whose honest evidence is compact
    pair = _scores(app=_loc(separation=2.5, peak=0.1, xy=(0.1, 0.1)))
    assert derive_flags(pair, SPECS) == []                             # no null: the fixed cut (3x)
    flagged = derive_flags(replace(pair, audit_localisation_null={"appearance": quiet}), SPECS)
    assert _codes(flagged) == [("LOCALIZED_CUE", "appearance")]
    assert "more than in 10 of the 10 scans" in flagged[0].message and "p = 0.09" in flagged[0].message
    strong = _scores(app=_loc(separation=5.0, peak=0.1, xy=(0.1, 0.1)))
    assert _codes(derive_flags(strong, SPECS)) == [("LOCALIZED_CUE", "appearance")]
    assert derive_flags(replace(strong, audit_localisation_null={"appearance": busy}), SPECS) == []
    too_few = replace(pair, audit_localisation_null={"appearance": quiet[:th.localized_null_min_scans - 1]})
    assert derive_flags(too_few, SPECS) == []                          # too few scans: the fixed cut again
    faint = _scores(app=_loc(separation=th.localized_null_min_separation * 0.9, peak=0.1))
    assert derive_flags(replace(faint, audit_localisation_null={"appearance": [1.0] * 20}), SPECS) == []


def test_a_localized_cue_is_high_only_when_no_honest_pair_of_the_model_matches_it():
    from dataclasses import replace

    from workers.audit.flags import localized_severity

    th = FlagThresholds()
    assert localized_severity(7.0, None, th) == "high" and localized_severity(5.0, None, th) == "medium"
    assert localized_severity(7.0, [1.0] * 19, th) == "high"                          # p = 1 / 20
    assert localized_severity(7.0, [1.0] * 8, th) == "medium"                         # p = 1 / 9: too few to say
    assert localized_severity(7.0, [1.0] * 18 + [None], th) == "medium"               # an infinite scan matches it
    assert localized_severity(7.0, [1.0] * 30 + [8.0], th) == "medium"                # p = 2 / 32
    assert localized_severity(7.0, [9.0, 8.0], th) == "high"                          # too few scans: the fixed cut
    strong = _scores(app=_loc(separation=7.0, peak=0.1, xy=(0.1, 0.1)))
    busy_once = [1.1] * 19 + [7.5]                                                       # p = 0.1: flagged, medium
    [flag] = derive_flags(replace(strong, audit_localisation_null={"appearance": busy_once}), SPECS)
    assert (flag.code, flag.severity) == ("LOCALIZED_CUE", "medium")


def test_the_localisation_null_of_a_pair_leaves_out_scans_that_touch_its_classes():
    from workers.audit.analysis import AuditLeanings, PairShares

    def scan(a, b, sep):
        return {"a": a, "b": b, "streams": {"appearance": {"peak_separation": sep, "peak_drop": 0.1,
                                                           "whole_stream_drop": 0.5}}}

    leanings = AuditLeanings.gather([PairShares("A", "B", {}, {}, {}, [scan("A", "C", 9.0), scan("B", "D", 2.0)]),
                                     PairShares("C", "D", {}, {}, {}, [scan("C", "A", 9.0), scan("D", "E", None)]),
                                     PairShares("E", "F", {}, {}, {}, [scan("E", "B", 1.5)])])
    assert sorted(leanings.localisation_null["appearance"].values(), key=str) == [1.5, 2.0, 9.0, None]
    assert leanings.localisation_null_for(("A", "B")) == {"appearance": [None]}         # only (D, E)
    assert sorted(leanings.localisation_null_for(("E", "F"))["appearance"]) == [2.0, 9.0]
    again = AuditLeanings.from_json(json.loads(json.dumps(leanings.to_json())))
    assert again.localisation_null_for(("C", "D")) == leanings.localisation_null_for(("C", "D"))
