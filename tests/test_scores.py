"""Pure scores: descriptors, the seed-consistent difference map, concentration, peak, and the scan windows."""
import numpy as np
import pytest

from workers.audit import scores
from workers.audit.analysis import peak_window, scan_windows


def test_flow_descriptor_is_blind_to_the_phase_of_a_flicker():
    t = np.arange(4)
    flicker = np.zeros((1, 2, 4, 3, 3))
    flicker[0, 0, :, 1, 1] = np.where(t % 2 == 0, 2.0, -2.0)
    assert np.allclose(scores.pixel_descriptor(flicker, "flow"), scores.pixel_descriptor(-flicker, "flow"))
    assert scores.pixel_descriptor(flicker, "flow")[0, 0, 1, 1] == pytest.approx(4.0)


def test_consistent_difference_peaks_where_every_seed_differs_not_where_one_does():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(4, 3, 2, 16, 16))
    b = rng.normal(0, 0.1, size=(4, 3, 2, 16, 16))
    a[:, :, :, 2:4, 10:12] += 1.0          # in every seed of class a
    b[0, :, :, 12:14, 2:4] += 3.0          # in one seed of class b only
    m = scores.consistent_difference_map(a, b)
    x, y = scores.peak_xy(m)
    assert 10 / 16 <= x <= 12 / 16 and 2 / 16 <= y <= 4 / 16
    assert m[2:4, 10:12].mean() > 2 * m[12:14, 2:4].mean()


def test_energy_concentration_bounds():
    spot = np.zeros((20, 20))
    spot[3, 3] = 1.0
    assert scores.energy_concentration(spot) == pytest.approx(1.0)
    assert scores.energy_concentration(np.ones((20, 20))) == pytest.approx(0.05)


def test_peak_xy_is_the_centre_of_the_strongest_neighbourhood_in_normalised_x_y():
    m = np.zeros((10, 20))
    m[6:9, 2:5] = 1.0
    m[7, 3] = 5.0
    m[1, 15] = 6.0  # a single hot pixel loses to a strong neighbourhood
    assert scores.peak_xy(m) == pytest.approx(((3 + 0.5) / 20, (7 + 0.5) / 10))


def test_speed_invariance_is_one_for_identical_levels_and_lower_otherwise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 8, 8))
    assert scores.speed_invariance([x, x.copy()]) == pytest.approx(1.0)
    assert scores.speed_invariance([x, rng.normal(size=x.shape)]) < 0.9


def test_scan_windows_tile_the_frame_with_half_overlap():
    boxes, side = scan_windows(32, 32)
    assert side == 4
    covered = np.zeros((32, 32), bool)
    for y0, y1, x0, x1 in boxes:
        assert y1 - y0 == side and x1 - x0 == side and y1 <= 32 and x1 <= 32
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_peak_window_compares_the_peak_with_windows_elsewhere_not_its_neighbours():
    boxes, side = scan_windows(32, 32)
    drops = np.full(len(boxes), 0.01)
    k = boxes.index((0, 4, 2, 6))
    drops[k] = 0.2
    neighbour = boxes.index((2, 6, 2, 6))   # overlaps the peak: the cue spilling over, not a competitor
    drops[neighbour] = 0.15
    far = boxes.index((20, 24, 20, 24))
    drops[far] = 0.05
    index, separation = peak_window(drops, boxes, side)
    assert index == k
    assert separation == pytest.approx(0.2 / 0.05)


def test_peak_window_without_anything_elsewhere_is_infinitely_separated():
    boxes, side = scan_windows(32, 32)
    drops = np.zeros(len(boxes))
    drops[0] = 0.1
    assert peak_window(drops, boxes, side) == (0, float("inf"))
    assert peak_window(np.zeros(len(boxes)), boxes, side)[1] == 0.0
