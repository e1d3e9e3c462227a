"""Factor probes: the null pairs share no class with the pair, a model that tells one class by a tint has a colour
lever towards it far above its other pairs' and no border lever beyond them, the read-out against the null is
right by hand, and STATIC_FACTOR_CUE / MOTION_FACTOR_CUE fire on their own evidence only."""
import dataclasses

import pytest
import torch
from torch import nn

from tests.test_flags import SPECS, _scores
from workers.audit import factor_probes as fp
from workers.audit import probe_outcomes
from workers.audit.analysis import PairScores
from workers.audit.flags import FlagThresholds, derive_flags
from workers.engine.manifest import InputSpec

CLASSES = [f"C{i}" for i in range(8)]


def test_null_pairs_share_no_class_with_the_pair_and_are_a_fixed_draw():
    pairs = probe_outcomes.null_class_pairs(CLASSES, "C0", "C1", limit=100)
    assert len(pairs) == 15 and all({"C0", "C1"}.isdisjoint(p) for p in pairs)          # C(6, 2)
    few = probe_outcomes.null_class_pairs(CLASSES, "C0", "C1", limit=5)
    assert len(few) == 5 and set(few) <= set(pairs)
    assert few == probe_outcomes.null_class_pairs(CLASSES, "C0", "C1", limit=5)
    assert probe_outcomes.null_class_pairs(CLASSES[:3], "C0", "C1", limit=5) == []


class TintNet(nn.Module):
    """Class 0 reads the clip's mean red (rectified, like a learnt detector: less red is barely evidence against
    it); the other classes read fixed green and blue patterns of the frame's inside, which a blank clip's colour,
    border or texture move only a little."""

    def __init__(self, classes: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.patterns = torch.randn((classes - 1, 3, 16, 16), generator=g) * 0.05
        self.patterns[..., :2, :] = self.patterns[..., -2:, :] = 0        # nothing on the border ring
        self.patterns[..., :, :2] = self.patterns[..., :, -2:] = 0
        self.patterns[:, 0] = 0                                         # and nothing in red

    def forward(self, x):
        frame = x.mean(dim=2)                                           # (N, 3, H, W)
        red = 10 * nn.functional.leaky_relu(frame[:, 0].mean(dim=(1, 2)), 0.05)
        others = torch.einsum("nchw,kchw->nk", frame, self.patterns)
        return torch.cat([red[:, None], others], dim=1)


def test_a_tinted_class_has_a_colour_lever_far_above_its_null():
    spec = InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 4, 16, 16])
    got = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C0", "C1", steps=30, null_pairs=24,
                                   device=torch.device("cpu"))["clip"]
    assert set(got) == {"colour", "border", "texture"}
    colour = probe_outcomes.probe_outcome(got["colour"], "C0", "C1")
    assert colour.holder == "C0" and colour.ratio > 5 and colour.p_value == pytest.approx(1 / 16)
    border = probe_outcomes.probe_outcome(got["border"], "C0", "C1")  # a red ring: less lever
    assert border.holder == "C0" and border.lever < 0.6 * colour.lever


def test_probe_outcome_by_hand():
    test = {"a_over_b": 1.0, "b_over_a": 6.0, "null": [1.0, 2.0, 3.0, 7.0]}
    out = probe_outcomes.probe_outcome(test, "A", "B")
    assert out.holder == "B" and out.lever == 6.0 and out.ratio == pytest.approx(6.0 / 2.5)
    assert out.p_value == pytest.approx(2 / 5) and out.null_size == 4
    assert probe_outcomes.probe_outcome({**test, "null": [-1.0, 0.0]}, "A", "B").ratio == float("inf")
    with pytest.raises(ValueError):
        fp.probe_space("speed", SPECS[0])


def _with_probe(s: PairScores, stream="appearance", probe="colour", lever=8.0, back=0.5, null=None) -> PairScores:
    test = {"a_over_b": lever, "b_over_a": back, "null": null if null is not None else [1.0] * 9 + [2.0] * 11}
    return dataclasses.replace(s, factor_probes={stream: {probe: test}})


def test_factor_cue_flags_fire_on_a_lever_that_stands_out_only():
    [flag] = derive_flags(_with_probe(_scores()), SPECS)
    assert (flag.code, flag.stream, flag.class_name, flag.severity) == ("STATIC_FACTOR_CUE", "appearance", "A",
                                                                         "medium")
    assert "from B to A" in flag.message and "20 pairs" in flag.message and "p = 0.05" in flag.message
    [motion] = derive_flags(_with_probe(_scores(), stream="motion", probe="camera"), SPECS)
    assert (motion.code, motion.stream) == ("MOTION_FACTOR_CUE", "motion")
    assert derive_flags(_with_probe(_scores(), lever=2.5), SPECS) == []                 # 1.25x, p = 0.05
    assert derive_flags(_with_probe(_scores(), null=[1.0] * 5), SPECS) == []            # 5 null pairs < 6
    assert derive_flags(_with_probe(_scores(), lever=-1.0, back=-1.5, null=[-2.0] * 9),
                        SPECS) == []                                                   # no push at all
    th = FlagThresholds(probe_min_ratio=10.0)
    assert derive_flags(_with_probe(_scores()), SPECS, th) == []                        # 4.3x < 10x


def test_factor_probes_survive_the_scores_json():
    s = _with_probe(_scores())
    back = PairScores.from_json(s.to_json(), "A", "B")
    assert back.factor_probes == s.factor_probes
