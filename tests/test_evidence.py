"""Pair evidence: the window geometry is exact, the attribution-guided localisation finds a planted window with a
fraction of the exhaustive scan's evaluations and agrees with it, and the evidence survives a JSON round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from workers.audit.analysis import far_from, scan_windows, window_sums
from workers.audit.evidence import EvidenceConfig, PairEvidence, calibrated_drops, choose_windows, measure_pair_evidence
from workers.engine.manifest import InputSpec

SPEC = InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 2, 16, 16])


def test_window_sums_match_a_direct_sum():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 16, 16))
    boxes, _ = scan_windows(16, 16, 0.25)
    got = window_sums(values, boxes)
    want = np.array([[v[y0:y1, x0:x1].sum() for y0, y1, x0, x1 in boxes] for v in values])
    assert np.allclose(got, want)


def test_chosen_windows_are_distinct_peaks_and_far_competitors():
    boxes, side = scan_windows(32, 32)
    estimate = np.zeros(len(boxes))
    estimate[5], estimate[6], estimate[100] = 1.0, 0.9, 0.5   # 5 and 6 overlap; 100 is far away
    peaks, elsewhere = choose_windows(estimate, boxes, side, EvidenceConfig(), seed=0)
    assert peaks[0] == 5 and 6 not in peaks
    assert all(far_from(boxes[p], boxes[q], side, 1) for p in peaks for q in peaks if p != q)
    assert 100 in elsewhere and all(far_from(boxes[i], boxes[5], side) for i in elsewhere)
    assert len(elsewhere) == EvidenceConfig().elsewhere_estimated + EvidenceConfig().elsewhere_sampled


def test_unverified_windows_take_the_scale_the_verified_ones_measured():
    estimate = np.array([0.4, 0.2, 0.1, 0.3, 0.05])
    verified, measured = [0, 1], np.array([0.2, 0.1])         # the estimate runs 2x the swap test here
    drops = calibrated_drops(estimate, verified, measured)
    assert np.allclose(drops, [0.2, 0.1, 0.05, 0.15, 0.025])
    assert np.allclose(calibrated_drops(estimate, [0, 1], np.array([-0.1, -0.1]))[2:], 0.0)  # no negative scale
    assert np.allclose(calibrated_drops(np.zeros(3), [0], np.array([0.3])), [0.3, 0.0, 0.0])


class PatchModel(nn.Module):
    """Class 0 reads a 4x4 patch at (y, x) = (2, 10) of the red channel; class 1 reads the whole frame weakly."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(2, 3 * 2 * 16 * 16)
        patch = torch.zeros(3, 2, 16, 16)
        patch[0, :, 2:6, 10:14] = 1.0
        weight[0] = patch.flatten()
        weight[1] = 0.02
        self.head = nn.Linear(weight.shape[1], 2, bias=False)
        self.head.weight.data = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(x).flatten(1))


@pytest.mark.parametrize("mode", ["attribution", "exhaustive"])
def test_localisation_finds_the_window_the_model_reads(mode):
    rng = np.random.default_rng(0)
    vis_a = rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32)
    vis_a[:, 0, :, 2:6, 10:14] += 2.0    # class a's visualisations light up the patch its unit reads
    vis_b = rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32) + 0.3
    evidence = measure_pair_evidence(PatchModel(), [SPEC], ["a", "b"], "a", "b", {"appearance": vis_a},
                                     {"appearance": vis_b}, device="cpu", config=EvidenceConfig(localisation=mode))
    loc = evidence.localisation["appearance"]
    x, y = loc.peak_xy
    assert 10 / 16 <= x <= 14 / 16 and 2 / 16 <= y <= 6 / 16, loc
    assert loc.favours == "a" and loc.peak_drop > 0.2 and loc.peak_separation > 3
    n_windows = len(scan_windows(16, 16)[0])
    if mode == "attribution":
        assert evidence.cost["evaluations"] < 2 * 4 * n_windows / 3  # far fewer rows than swapping every window
    else:
        assert evidence.cost["forward_rows"] >= 2 * 4 * (n_windows + 1)


def test_evidence_survives_a_json_round_trip():
    rng = np.random.default_rng(1)
    vis = {"appearance": rng.normal(size=(2, 3, 2, 16, 16)).astype(np.float32)}
    other = {"appearance": rng.normal(size=(2, 3, 2, 16, 16)).astype(np.float32)}
    evidence = measure_pair_evidence(PatchModel(), [SPEC], ["a", "b"], "a", "b", vis, other, device="cpu")
    again = PairEvidence.from_json(json.loads(json.dumps(evidence.to_json(), allow_nan=False)))
    assert again.to_json() == evidence.to_json()
    assert again.localisation["appearance"].peak_xy == evidence.localisation["appearance"].peak_xy


def test_peak_consistency_counts_the_samples_where_the_peak_beats_everything_elsewhere():
    from workers.audit.analysis import peak_consistency
    boxes, side = scan_windows(32, 32)
    per_sample = np.full((len(boxes), 9), 0.01)
    per_sample[0] = 0.2                         # the peak window, in every sample
    per_sample[-1, :2] = 0.5                    # a far window beats it in two samples
    wins, n, p = peak_consistency(per_sample, boxes, side, peak=0)
    assert (wins, n) == (7, 9) and np.isclose(p, (36 + 9 + 1) / 512)
    assert peak_consistency(np.zeros((len(boxes), 9)), boxes, side, peak=0)[2] == 1.0


def test_null_pairs_are_scanned_like_the_pair_and_kept_with_its_evidence():
    """The model's own null of LOCALIZED_CUE: the same scan on (a, c), a class the pair's ``a`` is not audited
    with; its patch lies where class a's unit reads, so the null scan finds it too, and class a's cue raises the
    null pair's separation as it raises the pair's (why the null of a pair leaves out scans touching its
    classes)."""
    rng = np.random.default_rng(2)
    vis_a = rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32)
    vis_a[:, 0, :, 2:6, 10:14] += 2.0
    vis_b = rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32) + 0.3
    vis_c = rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32) + 0.3
    model = nn.Sequential(PatchModel(), nn.Linear(2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.9]]))
        model[1].bias.zero_()
    evidence = measure_pair_evidence(model, [SPEC], ["a", "b", "c"], "a", "b", {"appearance": vis_a},
                                     {"appearance": vis_b}, device="cpu", null_pairs=[("a", "c")],
                                     null_vis={"c": {"appearance": vis_c}})
    [scan] = evidence.null_localisation
    assert (scan["a"], scan["b"]) == ("a", "c")
    null = scan["streams"]["appearance"]
    assert null["peak_separation"] is None or null["peak_separation"] > 3
    swaps = scan["global_factors"]["appearance"]                     # the null of GLOBAL_APPEARANCE_CUE, one way
    assert set(swaps) == {"colour", "border"}
    assert all(set(change) == {"margin", "delta", "share", "scale"} for change in swaps.values())
    again = PairEvidence.from_json(json.loads(json.dumps(evidence.to_json(), allow_nan=False)))
    assert again.null_localisation == evidence.null_localisation
    with pytest.raises(KeyError, match="'c'"):
        measure_pair_evidence(model, [SPEC], ["a", "b", "c"], "a", "b", {"appearance": vis_a},
                              {"appearance": vis_b}, device="cpu", null_pairs=[("a", "c")])


def test_swap_null_pairs_get_the_global_swaps_alone():
    """More draws of the global factors' null at one evaluation each: a swap-only null pair carries the one-way swap
    tests and no localisation, and costs no occlusion scan."""
    rng = np.random.default_rng(4)
    vis = {name: {"appearance": rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32)}
           for name in "abc"}
    model = nn.Sequential(PatchModel(), nn.Linear(2, 3))

    def measure(**kw):
        return measure_pair_evidence(model, [SPEC], ["a", "b", "c"], "a", "b", vis["a"], vis["b"], device="cpu",
                                     null_vis={"c": vis["c"]}, **kw)

    scanned, swapped = measure(null_pairs=[("a", "c")]), measure(swap_null_pairs=[("a", "c")])
    [scan], [swap] = scanned.null_localisation, swapped.null_localisation
    assert swap["streams"] == {} and swap["global_factors"] == scan["global_factors"]
    assert swapped.cost["forward_rows"] < scanned.cost["forward_rows"]
    with pytest.raises(KeyError, match="'c'"):
        measure_pair_evidence(model, [SPEC], ["a", "b", "c"], "a", "b", vis["a"], vis["b"], device="cpu",
                              swap_null_pairs=[("a", "c")])


def test_a_class_in_two_null_pairs_is_evaluated_once():
    """The null partner's visualisations are read once, however many of the pair's null scans hold it: the
    second scan with the same partner costs only its scan, the first one its scan and the partner's evaluation."""
    rng = np.random.default_rng(3)
    vis = {name: {"appearance": rng.normal(0, 0.05, size=(4, 3, 2, 16, 16)).astype(np.float32)}
           for name in "abc"}
    model = nn.Sequential(PatchModel(), nn.Linear(2, 3))

    def rows(null_pairs):
        evidence = measure_pair_evidence(model, [SPEC], ["a", "b", "c"], "a", "b", vis["a"], vis["b"],
                                         device="cpu", null_pairs=null_pairs, null_vis={"c": vis["c"]})
        return evidence.cost["forward_rows"]

    none, one, two = rows([]), rows([("a", "c")]), rows([("a", "c"), ("b", "c")])
    assert one - none == two - one + 4           # the 4 rows of class c's visualisations, read once
