"""Global factors (colour, border): the swaps change that factor and nothing else, the holder is the class with more
of it, the swap test on a model that reads only the mean colour finds the colour and not the border, and the
GLOBAL_APPEARANCE_CUE and decisiveness rules fire on their own evidence only."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_flags import SPECS, _scores
from workers.audit import global_factors as gf
from workers.audit.analysis import decisiveness
from workers.audit.evidence import PairEvaluator, margin_change, measure_global_factors
from workers.audit.flags import FlagThresholds, decisive, derive_flags
from workers.audit.global_factors import swap_effect

RNG = np.random.default_rng(0)


def _clip(s=3, c=3, t=4, h=16, w=16):
    return RNG.normal(size=(s, c, t, h, w)).astype(np.float32)


def test_colour_swap_moves_the_channel_means_only():
    own, partner = _clip(), _clip() + np.array([0.5, -0.2, 0.1], dtype=np.float32)[None, :, None, None, None]
    out = gf.swap_colour(own, partner)
    np.testing.assert_allclose(out.mean(axis=(2, 3, 4)), np.broadcast_to(partner.mean(axis=(0, 2, 3, 4)), (3, 3)),
                               atol=1e-5)
    np.testing.assert_allclose(out - out.mean(axis=(2, 3, 4), keepdims=True),
                               own - own.mean(axis=(2, 3, 4), keepdims=True), atol=1e-5)


def test_border_swap_replaces_the_ring_and_keeps_the_inside():
    own, partner = _clip(), _clip()
    out = gf.swap_border(own, partner)
    mask = gf.border_mask(16, 16)
    assert mask.sum() == 16 * 16 - 12 * 12                     # a 2 px ring (1/8 of 16)
    np.testing.assert_array_equal(out[..., ~mask], own[..., ~mask])
    np.testing.assert_allclose(out[..., mask], np.broadcast_to(partner.mean(axis=0)[..., mask], out[..., mask].shape))
    assert gf.border_mask(4, 4).sum() == 12                    # never thinner than 1 px


def test_holder_is_the_class_with_more_of_the_factor():
    plain, tinted = _clip() * 0.1, _clip() * 0.1 + 0.8
    assert gf.holder(tinted, plain, "colour", ("T", "P")) == "T"
    assert gf.holder(plain, tinted, "colour", ("P", "T")) == "T"
    barred = plain.copy()
    barred[..., gf.border_mask(16, 16)] = 2.0
    assert gf.holder(plain, barred, "border", ("P", "B")) == "B"
    with pytest.raises(ValueError):
        gf.factor_amount(plain, "speed")
    assert gf.factors_of("flow") == () and gf.factors_of("rgb") == ("colour", "border")


class MeanColourNet(nn.Module):
    """Class 0 reads the clip's mean red, class 1 its mean green, class 2 a constant: only the colour matters."""

    def forward(self, x):
        red, green = x[:, 0].mean(dim=(1, 2, 3)), x[:, 1].mean(dim=(1, 2, 3))
        return torch.stack([10 * red, 10 * green, torch.zeros_like(red)], dim=1)


def test_swap_test_finds_the_colour_a_model_reads_and_not_the_border():
    from workers.engine.manifest import InputSpec
    spec = InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 4, 16, 16])
    red, green = _clip() * 0.05, _clip() * 0.05
    red[:, 0, :, 4:12, 4:12] += 1.0      # red inside the frame, away from the border ring
    green[:, 1, :, 4:12, 4:12] += 1.0
    evaluator = PairEvaluator(MeanColourNet(), [spec], device="cpu")
    la, lb = evaluator.evaluate({"clip": red}).logits, evaluator.evaluate({"clip": green}).logits
    tests = measure_global_factors(evaluator, {"clip": red}, {"clip": green}, la, lb, 0, 1, "R", "G")["clip"]
    colour, border = tests["colour"]["classes"]["R"], tests["border"]["classes"]["R"]
    assert colour["share"] > 0.9 and abs(border["share"]) < 0.05
    assert swap_effect(colour) > 0.9


def test_margin_change_shares_and_scale_by_hand():
    full = np.array([[10.0, 2.0, 0.0, -4.0]])
    cut = np.array([[6.0, 4.0, 0.0, -4.0]])
    got = margin_change(full, cut, target=0, other=1)
    assert got["margin"] == 8.0 and got["delta"] == 6.0 and got["share"] == pytest.approx(0.75)
    assert got["scale"] == 12.0                                          # the median of the margins 10 and 14
    assert margin_change(full[:, :2], cut[:, :2], 0, 1)["scale"] is None
    assert swap_effect(got) == 0.5 and swap_effect({**got, "scale": None}) is None


def _with_factor(s, share=0.9, delta=9.0, scale=10.0, holder="A"):
    change = {"margin": 10.0, "delta": delta, "share": share, "scale": scale}
    quiet = {**change, "delta": 0.0, "share": 0.0}
    return dataclasses.replace(s, global_factors={"appearance": {"colour": {"holder": holder,
                                                                            "classes": {"A": change, "B": quiet}}}})


def test_global_appearance_cue_fires_on_a_large_effect_and_share_only():
    th = FlagThresholds(global_min_effect=0.5, global_min_share=0.5)
    [flag] = derive_flags(_with_factor(_scores()), SPECS, th)
    assert (flag.code, flag.stream, flag.class_name) == ("GLOBAL_APPEARANCE_CUE", "appearance", "A")
    assert flag.message.startswith("The overall colour") and "90%" in flag.message
    assert derive_flags(_with_factor(_scores(), delta=4.0), SPECS, th) == []          # effect 0.4
    assert derive_flags(_with_factor(_scores(), share=0.4), SPECS, th) == []          # share 0.4
    [named] = derive_flags(_with_factor(_scores(), holder="B"), SPECS, th)           # found from A's side
    assert named.class_name == "B"


def test_a_factor_this_version_does_not_measure_raises_no_flag():
    """Evidence stored by another version may hold factors this one does not know (round 12's motion factors):
    they are read past, not flagged, not a KeyError."""
    s = _with_factor(_scores())
    moving = dataclasses.replace(s, global_factors={"motion": {"shake": s.global_factors["appearance"]["colour"]}})
    assert derive_flags(moving, SPECS, FlagThresholds(global_min_effect=0.5)) == []
    assert gf.factor_tests(SPECS) == [("appearance", "colour"), ("appearance", "border")]


def test_two_global_factors_of_one_stream_make_one_flag():
    s = _with_factor(_scores())
    tests = s.global_factors["appearance"]
    both = {**tests, "border": {**tests["colour"], "holder": "B"}}
    [flag] = derive_flags(dataclasses.replace(s, global_factors={"appearance": both}), SPECS,
                          FlagThresholds(global_min_effect=0.5))
    assert flag.class_name is None and "overall colour" in flag.message and "border of the frame" in flag.message


def test_decisiveness_by_hand_and_the_gate():
    assert decisiveness({"B": 2.0, "C": 10.0, "D": 30.0}, "B") == pytest.approx(0.1)
    assert decisiveness({"B": 2.0}, "B") is None and decisiveness({"C": -1.0, "B": 1.0}, "B") is None
    s = dataclasses.replace(_with_factor(_scores()), decisiveness={"A": 0.1, "B": 0.9})
    strict = FlagThresholds(min_decisiveness=0.3, global_min_effect=0.5)
    assert not decisive(s, "A", strict) and decisive(s, "B", strict) and decisive(s, None, strict)
    assert derive_flags(s, SPECS, strict) == []                                       # about A, which is not decisive
    ungated = FlagThresholds(min_decisiveness=0, global_min_effect=0.5)
    assert [f.code for f in derive_flags(s, SPECS, ungated)] == ["GLOBAL_APPEARANCE_CUE"]
    assert decisive(dataclasses.replace(s, decisiveness={}), "A", strict)              # older evidence passes
    assert decisive(dataclasses.replace(s, decisiveness={"A": None, "B": 0.0}), "A", strict)


def test_a_global_factor_must_cost_more_than_it_costs_the_audits_other_pairs():
    from workers.audit.analysis import AuditLeanings, PairShares, factor_baseline, with_audit_baseline
    from workers.audit.global_factors import pair_effect
    th = FlagThresholds(global_min_effect=0.5, global_min_share=0.5)
    cue = _with_factor(_scores())                                    # A loses 0.9 of its usual margin to B's colour
    assert pair_effect(cue.global_factors["appearance"]["colour"]) == pytest.approx(0.9)

    def audit(*effects):
        others = [PairShares(f"C{i}", f"D{i}", {}, {}, _with_factor(_scores(), delta=10 * e).global_factors)
                  for i, e in enumerate(effects)]
        return with_audit_baseline(cue, AuditLeanings.gather([PairShares("A", "B", {}, {}, cue.global_factors),
                                                              *others]))

    # a model whose other pairs barely answer the colour swap: A's colour stands out
    [flag] = derive_flags(audit(0.1, 0.2, 0.3), SPECS, th)
    assert flag.code == "GLOBAL_APPEARANCE_CUE" and "the audit's other 3 pairs: 20% (median)" in flag.message
    # a model that answers every pair's colour swap as strongly: how it reads colour, not a cue of this pair
    assert derive_flags(audit(1.0, 1.2, 0.8), SPECS, th) == []
    # too few other pairs to say: the absolute rule alone
    assert len(derive_flags(audit(1.0, 1.2), SPECS, th)) == 1
    assert factor_baseline({("A", "B"): 0.9}, ("B", "A")) is None
    assert factor_baseline({("A", "B"): 0.9, ("C", "D"): 0.2, ("C", "E"): 0.4}, ("B", "A")) == \
        {"median": pytest.approx(0.3), "pairs": 2}


def test_a_global_factor_must_stand_out_against_the_same_swap_on_class_pairs_the_audit_does_not_confuse():
    """The model's own null of GLOBAL_APPEARANCE_CUE: the one-way swap on each audited class against classes it is
    not confused with (``evidence._null_scans``), gathered over the audit; scans touching the pair's classes are
    left out (a class's cue is lost against every class)."""
    from workers.audit.analysis import AuditLeanings, PairShares, with_audit_baseline
    from workers.audit.flags import beats_factor_null
    th = FlagThresholds(global_min_effect=0.5, global_min_share=0.5)

    def scan(a, b, effect):
        return {"a": a, "b": b, "streams": {}, "global_factors": {
            "appearance": {"colour": {"margin": 10.0, "delta": 10.0 * effect, "share": 0.1, "scale": 10.0}}}}

    def audit(*effects):
        scans = [scan(f"C{i}", f"D{i}", e) for i, e in enumerate(effects)]
        leanings = AuditLeanings.gather([PairShares("A", "B", {}, {}, {}, [scan("A", "C0", 5.0)]),
                                         PairShares("C0", "D0", {}, {}, {}, scans)])
        return with_audit_baseline(_with_factor(_scores()), leanings)     # A loses 0.9 to B's colour

    quiet = audit(0.1, 0.2, 0.3, 0.1, 0.2, 0.4)
    assert quiet.audit_factor_null == {"appearance": {"colour": [0.1, 0.2, 0.3, 0.1, 0.2, 0.4]}}  # not (A, C0)
    [flag] = derive_flags(quiet, SPECS, th)
    assert "exceeds the same swap on 6 of 6 class pairs" in flag.message and "p = 0.14" in flag.message
    # a model whose unconfused classes lose as much to each other's colour: how it reads colour, not a cue
    assert derive_flags(audit(1.0, 0.2, 1.2, 0.95, 0.3, 2.0), SPECS, th) == []
    assert len(derive_flags(audit(1.0, 1.2, 2.0, 0.95), SPECS, th)) == 1                # 4 scans: no null
    assert beats_factor_null(0.9, None, th) == (True, "")
    again = AuditLeanings.from_json(json.loads(json.dumps(AuditLeanings.gather(
        [PairShares("C0", "D0", {}, {}, {}, [scan("C0", "D0", 0.5)])]).to_json())))
    assert again.factor_null_for(("A", "B")) == {"appearance": {"colour": [0.5]}}
    back = type(quiet).from_json(quiet.to_json(), "A", "B")
    assert back.audit_factor_null == quiet.audit_factor_null
