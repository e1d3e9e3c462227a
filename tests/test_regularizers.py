"""Each regulariser against values computed by hand."""
import pytest
import torch

from workers.engine.regularizers import lp_norm, spatial_tv, temporal_variation


def test_lp_norm_is_mean_of_abs_power():
    u = torch.tensor([1.0, -2.0, 0.5, 0.0]).view(1, 1, 1, 2, 2)
    expected = (1 + 2 ** 6 + 0.5 ** 6 + 0) / 4
    assert lp_norm(u, 6.0).item() == pytest.approx(expected)


def test_lp_norm_is_per_row():
    u = torch.stack([torch.ones(1, 1, 2, 2), 2 * torch.ones(1, 1, 2, 2)])
    assert lp_norm(u, 2.0).tolist() == pytest.approx([1.0, 4.0])


def test_spatial_tv_of_a_hand_made_frame():
    # frame [[0, 1], [2, 4]]: one interior pixel (0,0): dx = 1 - 0, dy = 2 - 0 -> 1 + 4 = 5
    u = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).view(1, 1, 1, 2, 2)
    assert spatial_tv(u, 2.0).item() == pytest.approx(5.0)
    assert spatial_tv(u, 1.0).item() == pytest.approx(5.0 ** 0.5, rel=1e-5)


def test_spatial_tv_is_zero_for_a_constant_clip_and_ignores_time():
    assert spatial_tv(torch.full((2, 3, 4, 5, 5), 0.7)).tolist() == pytest.approx([0.0, 0.0])
    still = torch.randn(1, 1, 1, 4, 4)
    moving = torch.cat([still, still], dim=2)
    assert spatial_tv(moving).item() == pytest.approx(spatial_tv(still).item())


def test_temporal_variation_of_a_hand_made_clip():
    # pixel values over 3 frames: 0, 1, 3 -> squared steps 1 and 4, mean 2.5 (all pixels equal)
    u = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    assert temporal_variation(u).item() == pytest.approx(2.5)


def test_temporal_variation_is_zero_for_one_frame():
    assert temporal_variation(torch.randn(3, 2, 1, 4, 4)).tolist() == [0.0, 0.0, 0.0]
