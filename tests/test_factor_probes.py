"""Factor probes: the sample holds the pair and a fixed draw of the other classes, a model that tells one class by a
tint has a colour lever towards it far above its other pairs' and a pull towards the colour no other class has, the
read-outs are right by hand, and STATIC_FACTOR_CUE / MOTION_FACTOR_CUE fire on their own evidence only, never for
a class that merely pulls hardest among classes that all pull a lot; the local probes find the window a class reads,
and a window that stands out is a LOCALIZED_CUE there."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from tests.test_flags import SPECS, _scores
from workers.audit import factor_probes as fp
from workers.audit import flags as flags_mod
from workers.audit import probe_outcomes
from workers.audit.analysis import PairScores
from workers.audit.flags import Flag, FlagThresholds, derive_flags
from workers.engine.manifest import InputSpec

CLASSES = [f"C{i}" for i in range(8)]


def test_the_sample_is_the_pair_then_a_fixed_draw_of_the_other_classes():
    assert probe_outcomes.probe_classes(CLASSES, "C3", "C1", limit=100) == ["C3", "C1", "C0", "C2", "C4", "C5",
                                                                           "C6", "C7"]
    few = probe_outcomes.probe_classes(CLASSES, "C3", "C1", limit=3)
    assert few[:2] == ["C3", "C1"] and len(few) == 5 and len(set(few)) == 5
    assert few == probe_outcomes.probe_classes(CLASSES, "C3", "C1", limit=3)
    assert probe_outcomes.probe_classes(CLASSES, "C3", "C1", limit=0) == ["C3", "C1"]


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
    got = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C0", "C1", steps=30, other_classes=10,
                                   device=torch.device("cpu"))["clip"]
    assert set(got) == {"colour", "border", "texture", "patch"} and got["colour"]["classes"][:2] == ["C0", "C1"]
    assert [got["colour"]["levers"][i][i] for i in range(8)] == [None] * 8
    colour = probe_outcomes.probe_outcome(got["colour"], "C0", "C1")
    assert colour.holder == "C0" and colour.ratio > 5 and colour.p_value == pytest.approx(1 / 16)
    assert colour.class_p_value < 0.01 and colour.classes_size == 8
    tint = fp.probe_space("colour", spec).render(torch.full((1, 3), 50.0))   # the tint is bounded, however pushed
    assert tint.abs().max() == pytest.approx(fp.COLOUR_AMPLITUDE)
    assert fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C0", "C1", steps=30, other_classes=0,
                                    device=torch.device("cpu")) == {}


def test_the_pairs_of_an_audit_share_the_levers_they_have_in_common():
    """A lever depends on its row alone, so a second pair on the same classes measures nothing new and reads the
    same matrix, and a pair whose sample holds other classes measures only the rows it lacks."""
    spec = InputSpec(name="clip", modality="rgb", layout="NCTHW", shape=[3, 4, 16, 16])
    cpu = torch.device("cpu")
    cache: fp.LeverCache = {}
    first = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C0", "C1", steps=5, other_classes=10,
                                     device=cpu, cache=cache)
    assert len(cache) == 4 * 8 * 7                                     # 4 probes x every directed pair
    calls = []
    original = fp.directed_levers

    def counting(*args, **kwargs):
        calls.append(len(args[4]))
        return original(*args, **kwargs)

    fp.directed_levers = counting
    try:
        second = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C2", "C5", steps=5, other_classes=10,
                                          device=cpu, cache=cache)
        alone = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C2", "C5", steps=5, other_classes=10,
                                         device=cpu)
        some = fp.measure_factor_probes(TintNet(), [spec], CLASSES, "C0", "C1", steps=5, other_classes=3,
                                        device=cpu, cache={k: v for k, v in cache.items() if 3 not in k[3:]})
    finally:
        fp.directed_levers = original
    sample = probe_outcomes.probe_classes(CLASSES, "C0", "C1", 3)
    lacking = 2 * (len(sample) - 1) if "C3" in sample else 0          # the rows to or from C3, per probe
    assert calls == [56] * 4 + ([lacking] * 4 if lacking else [])    # the second pair measured nothing
    c0 = second["clip"]["colour"]
    assert c0["classes"][:2] == ["C2", "C5"]
    assert np.allclose(np.array(c0["levers"], dtype=float), np.array(alone["clip"]["colour"]["levers"], dtype=float),
                       equal_nan=True, atol=1e-5)
    assert first["clip"]["colour"]["levers"][0][1] == pytest.approx(
        some["clip"]["colour"]["levers"][0][1], abs=1e-5)


class WindowNet(nn.Module):
    """Class 0 reads one window of the frame, (row 3, column 1) of a 4 x 4 tiling, in its first channel: the mean
    (``what`` "still") or how much it changes between frames ("changing"), rectified; the other classes read fixed
    weak patterns of the whole clip."""

    def __init__(self, what: str, channels: int, classes: int = 8) -> None:
        super().__init__()
        self.what = what
        g = torch.Generator().manual_seed(1)
        self.patterns = torch.randn((classes - 1, channels, 4, 16, 16), generator=g) * 0.02

    def forward(self, x):
        window = x[:, 0, :, 12:16, 4:8]                                 # (N, T, 4, 4)
        if self.what == "still":
            signal = window.mean(dim=(1, 2, 3))
        else:
            signal = (window[:, 1:] - window[:, :-1]).abs().mean(dim=(1, 2, 3))
        own = 10 * nn.functional.leaky_relu(signal, 0.05)
        others = torch.einsum("ncthw,kcthw->nk", x, self.patterns)
        return torch.cat([own[:, None], others], dim=1)


@pytest.mark.parametrize(("what", "modality", "probe"), [("still", "rgb", "patch"), ("changing", "flow", "spot")])
def test_a_local_probe_finds_the_window_a_class_reads(what, modality, probe):
    """A class told by one window of the frame has a lever in that window far above the other pairs' there, and
    the window's centre comes with it."""
    channels = 3 if modality == "rgb" else 2
    spec = InputSpec(name="clip", modality=modality, layout="NCTHW", shape=[channels, 4, 16, 16])
    got = fp.measure_factor_probes(WindowNet(what, channels), [spec], CLASSES, "C0", "C1", steps=30,
                                   other_classes=10, device=torch.device("cpu"))["clip"]
    out = probe_outcomes.probe_outcome(got[probe], "C0", "C1")
    assert out.holder == "C0" and out.ratio > 3 and out.p_value == pytest.approx(1 / 16)
    assert out.class_p_value < 0.01 and out.peak_xy == pytest.approx((0.375, 0.875))
    whole = "colour" if modality == "rgb" else "camera"
    assert "window_levers" not in got[whole] and len(got[probe]["window_levers"][0][1]) == 16


def test_window_masks_tile_the_frame():
    masks = fp.window_masks(10, 13)
    assert masks.shape == (16, 10, 13) and torch.equal(masks.sum(dim=0), torch.ones(10, 13))


def _matrix(pulls: dict[str, float], a_over_b: float | None = None) -> dict:
    """Every class pulls its ``pulls`` value over every other; A over B is ``a_over_b`` where given."""
    names = list(pulls)
    levers = [[None if x == y else pulls[x] for y in names] for x in names]
    if a_over_b is not None:
        levers[0][1] = a_over_b
    return {"classes": names, "levers": levers}


def test_probe_outcome_by_hand():
    test = _matrix({"A": 1.0, "B": 6.0, "C": 1.0, "D": 2.0, "E": 3.0, "F": 7.0})
    out = probe_outcomes.probe_outcome(test, "A", "B")
    # null pairs among C-F: their larger levers 2, 3, 7, 3, 7, 7: median 5
    assert out.holder == "B" and out.lever == 6.0 and out.ratio == pytest.approx(6.0 / 5.0)
    assert out.p_value == pytest.approx(4 / 7) and out.null_size == 6 and out.classes_size == 6
    logs = np.log([1.0, 1.0, 2.0, 3.0, 7.0])
    t = (np.log(6.0) - logs.mean()) / (logs.std(ddof=1) * np.sqrt(1 + 1 / 5))
    assert out.class_p_value == pytest.approx(stats.t.sf(t, 4))
    flat = probe_outcomes.probe_outcome(_matrix({"A": 0.0, "B": -1.0, "C": -1.0, "D": -2.0}), "A", "B")
    assert flat.ratio == float("inf") and flat.class_p_value == 1.0          # no class pulls at all
    assert probe_outcomes.affinity_p_value(np.array([5.0, 1.0, 1.0, 1.0]), 0) == 0.0
    with pytest.raises(ValueError):
        fp.probe_space("speed", SPECS[0])


OUTLIER = {"A": 8.0, "B": 0.5, **{f"C{i}": 1.0 + 0.1 * (i % 3) for i in range(6)}}
TOP_OF_A_SPREAD = {"A": 8.0, "B": 0.1, "C0": 6.0, "C1": 3.0, "C2": 1.5, "C3": 0.8, "C4": 0.4, "C5": 0.2}


def _with_probe(s: PairScores, stream="appearance", probe="colour", pulls=None, a_over_b=None) -> PairScores:
    return dataclasses.replace(s, factor_probes={stream: {probe: _matrix(pulls or OUTLIER, a_over_b)}})


def test_factor_cue_flags_fire_on_a_lever_that_stands_out_only():
    [flag] = derive_flags(_with_probe(_scores()), SPECS)
    assert (flag.code, flag.stream, flag.class_name, flag.severity) == ("STATIC_FACTOR_CUE", "appearance", "A",
                                                                         "medium")
    assert "from B to A" in flag.message and "15 pairs" in flag.message and "p = 0.06" in flag.message
    assert "over 8)" in flag.message
    [motion] = derive_flags(_with_probe(_scores(), stream="motion", probe="camera"), SPECS)
    assert (motion.code, motion.stream) == ("MOTION_FACTOR_CUE", "motion")
    assert derive_flags(_with_probe(_scores(), a_over_b=1.5), SPECS) == []               # 1.25x the null median
    few = {k: v for k, v in OUTLIER.items() if k not in ("C3", "C4", "C5")}
    assert derive_flags(_with_probe(_scores(), pulls=few), SPECS) == []                  # 3 null pairs < 6
    assert derive_flags(_with_probe(_scores(), pulls={k: -v for k, v in OUTLIER.items()}), SPECS) == []
    th = FlagThresholds(probe_min_ratio=10.0)
    assert derive_flags(_with_probe(_scores()), SPECS, th) == []                         # 6.7x < 10x


def test_no_factor_cue_flag_for_the_class_that_merely_pulls_hardest():
    out = probe_outcomes.probe_outcome(_matrix(TOP_OF_A_SPREAD), "A", "B")
    assert out.ratio > 1.5 and out.p_value < 0.1 and 0.05 < out.class_p_value < 0.2   # stands out among pairs only
    assert derive_flags(_with_probe(_scores(), pulls=TOP_OF_A_SPREAD), SPECS) == []
    assert derive_flags(_with_probe(_scores(), pulls=TOP_OF_A_SPREAD), SPECS, FlagThresholds(probe_class_alpha=0.2))


def _local(pulls=None, a_over_b=None, window=12) -> dict:
    """``_matrix``'s levers in ``window`` of a 4 x 4 grid (row 3, column 0: centre (0.125, 0.875)); every other
    window moves every pair by 1."""
    levers = _matrix(pulls or OUTLIER, a_over_b)["levers"]
    return {"classes": list(pulls or OUTLIER), "grid": 4, "window_levers": [
        [None if v is None else [v if g == window else 1.0 for g in range(16)] for v in row] for row in levers]}


def test_a_local_probe_that_stands_out_is_a_localized_cue_at_its_window():
    s = dataclasses.replace(_scores(), factor_probes={"appearance": {"patch": _local()}})
    [flag] = derive_flags(s, SPECS)
    assert (flag.code, flag.stream, flag.class_name, flag.severity) == ("LOCALIZED_CUE", "appearance", "A", "medium")
    assert flag.peak_xy == (0.125, 0.875) and "bottom-left" in flag.message and "from B to A" in flag.message
    assert "logo" in flag.message
    everywhere = _local(pulls={k: 8.0 for k in OUTLIER}, window=5)     # a window every pair answers as much
    for quiet in (_local(a_over_b=1.5), everywhere):
        assert derive_flags(dataclasses.replace(s, factor_probes={"appearance": {"patch": quiet}}), SPECS) == []
    top = dataclasses.replace(s, factor_probes={"appearance": {"patch": _local(pulls=TOP_OF_A_SPREAD)}})
    assert derive_flags(top, SPECS, FlagThresholds(local_probe_class_alpha=0.05)) == []  # class p 0.094
    assert len(derive_flags(top, SPECS)) == 1                                           # <= 0.1, the default
    assert derive_flags(s, SPECS, FlagThresholds(local_probe_min_ratio=10.0)) == []
    assert derive_flags(s, SPECS, FlagThresholds(probe_min_ratio=10.0)) == [flag]     # its own thresholds
    scanned = Flag("LOCALIZED_CUE", "appearance", "high", "scan", (0.1, 0.9), class_name="A")
    assert flags_mod.local_probe_flags(s, FlagThresholds(), [scanned]) == []           # the scan said it already
    other = Flag("LOCALIZED_CUE", "motion", "high", "scan", (0.1, 0.9), class_name="A")
    assert flags_mod.local_probe_flags(s, FlagThresholds(), [other]) == [flag]


def test_factor_probes_survive_the_scores_json():
    s = dataclasses.replace(_scores(), factor_probes={"appearance": {"colour": _matrix(OUTLIER), "patch": _local()}})
    back = PairScores.from_json(s.to_json(), "A", "B")
    assert back.factor_probes == s.factor_probes


def test_probes_are_off_unless_the_audit_asks_for_them():
    from workers.audit.evidence import PROBE_OTHER_CLASSES
    from workers.audit.options import AuditOptions, parse_audit_options
    from workers.audit.pipeline import evidence_config
    from workers.engine.errors import InvalidInput

    assert evidence_config(AuditOptions()).probe_other_classes == 0
    asked = parse_audit_options({"factor_probes": True})
    assert evidence_config(asked).probe_other_classes == PROBE_OTHER_CLASSES == 10
    with pytest.raises(InvalidInput) as err:
        parse_audit_options({"factor_probes": "sometimes"})
    assert err.value.field == "options.factor_probes"
