"""The stream parameterisations (pixel, Fourier), the scale/rotation transform, and the spectrum slope."""
import pytest
import torch
from torch import nn

from workers.engine.config import VisualizationConfig
from workers.engine.manifest import InputSpec
from workers.engine.parameterization import parameterize, spectrum_scale
from workers.engine.regularizers import temporal_variation
from workers.engine.spectrum import spectrum_slope
from workers.engine.transforms import affine_matrices, affine_rows, draw_affine_table
from workers.engine.visualize import UnitRequest, visualize

RGB_CLIP = InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 4, 12, 15],
                     mean=[0.45, 0.4, 0.5], std=[0.25, 0.2, 0.3])
FLOW_CLIP = InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 4, 12, 15], scale=4.0)
RGB_FRAME = InputSpec(name="image", modality="rgb", layout="NCHW", shape=[3, 16, 16], mean=[0.5] * 3, std=[0.5] * 3)


@pytest.mark.parametrize("spec", [RGB_CLIP, FLOW_CLIP, RGB_FRAME], ids=lambda s: f"{s.modality}-{s.layout}")
def test_fourier_parameterization_starts_at_the_given_image_with_its_shape(spec):
    c, t, h, w = spec.base_channels, spec.num_frames, spec.height, spec.width
    # inside every stream's range: RGB pixels u / 2 + mean stay in (0, 1)
    start = (0.3 * torch.randn(2, c, t, h, w, generator=torch.Generator().manual_seed(0))).clamp(-0.6, 0.6)
    param = parameterize("fourier", start, spec)
    out = param.unit()
    assert out.shape == (2, c, t, h, w)
    assert torch.allclose(out, start, atol=1e-4)
    assert all(v.requires_grad for v in param.variables)


def test_fourier_rgb_stays_inside_the_pixel_range_whatever_its_variables():
    param = parameterize("fourier", torch.zeros(3, 3, 4, 12, 15), RGB_CLIP)
    with torch.no_grad():
        param.spectrum.normal_(0, 50.0)
    pixels = param.unit() / 2 + torch.tensor(RGB_CLIP.mean).view(1, 3, 1, 1, 1)
    assert pixels.min() >= 0 and pixels.max() <= 1
    assert pixels.min() < 0.01 and pixels.max() > 0.99  # the range is reached, not merely respected


def test_fourier_flow_is_unbounded_and_rows_are_independent():
    param = parameterize("fourier", torch.zeros(2, 2, 4, 12, 15), FLOW_CLIP)
    with torch.no_grad():
        param.spectrum[1].normal_(0, 50.0)
    out = param.unit()
    assert out[1].abs().max() > 5
    assert out[0].abs().max() == 0


def test_spectrum_scale_falls_with_frequency_and_has_unit_rms():
    scale = spectrum_scale(32, 32, decay=1.0)
    assert scale.shape == (32, 17)
    assert scale.square().mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)
    assert scale[0, 1] > scale[0, 4] > scale[0, 16]
    assert scale[0, 4] / scale[0, 8] == pytest.approx(2.0, rel=1e-5)  # 1/f
    flat = spectrum_scale(8, 8, decay=0.0)
    assert torch.allclose(flat, torch.ones_like(flat))


def test_fourier_parameterization_leaves_time_free_for_the_temporal_regulariser():
    start = torch.randn(1, 2, 4, 12, 15, generator=torch.Generator().manual_seed(1))
    param = parameterize("fourier", start, FLOW_CLIP)
    opt = torch.optim.Adam(param.variables, lr=0.05)
    before = temporal_variation(param.unit()).item()
    for _ in range(100):
        opt.zero_grad()
        temporal_variation(param.unit()).sum().backward()
        opt.step()
    assert temporal_variation(param.unit()).item() < 0.05 * before


def _power_law_noise(exponent: float, size: int, seed: int) -> torch.Tensor:
    """A (size, size) image whose power spectrum falls as 1/f^exponent."""
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.fftfreq(size).view(1, -1)
    f = torch.sqrt(fy * fy + fx * fx)
    amplitude = torch.where(f > 0, f.clamp_min(1e-9).pow(-exponent / 2), torch.zeros(()))
    spectrum = torch.complex(torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen))
    return torch.fft.ifft2(spectrum * amplitude).real


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0])
def test_spectrum_slope_recovers_the_exponent_of_power_law_noise(exponent):
    images = torch.stack([_power_law_noise(exponent, 96, seed) for seed in range(4)])
    slopes = spectrum_slope(images)
    assert slopes.shape == (4,)
    assert slopes.mean().item() == pytest.approx(-exponent, abs=0.15)


def test_spectrum_slope_is_blind_to_brightness_and_contrast():
    image = _power_law_noise(2.0, 64, 0)
    assert spectrum_slope(3 * image + 7).item() == pytest.approx(spectrum_slope(image).item(), abs=1e-6)


def test_affine_rows_rotate_content_and_flow_vectors_together():
    # a bright pixel 4 px right of the centre; rotating by +90 degrees (y down) moves it 4 px below the centre
    image = torch.zeros(1, 1, 1, 17, 17)
    image[..., 8, 12] = 1.0
    quarter = affine_matrices(torch.tensor([1.0]), torch.tensor([90.0]))
    turned = affine_rows(image, quarter)
    assert turned[0, 0, 0].argmax().item() == 12 * 17 + 8
    # a uniform rightward flow field turns into a downward one
    flow = torch.zeros(1, 2, 1, 17, 17)
    flow[:, 0] = 1.0
    out = affine_rows(flow, quarter, vectors=True)[0, :, 0, 8, 8]
    assert out.tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    # scaling by 2 doubles the displacement
    doubled = affine_rows(flow, affine_matrices(torch.tensor([2.0]), torch.tensor([0.0])), vectors=True)
    assert doubled[0, 0, 0, 8, 8].item() == pytest.approx(2.0, abs=1e-5)


def test_affine_rows_is_the_identity_without_scale_or_rotation_and_per_row_otherwise():
    x = torch.randn(2, 3, 2, 9, 11)
    assert torch.equal(affine_rows(x, affine_matrices(torch.ones(2), torch.zeros(2))), x)
    out = affine_rows(x, affine_matrices(torch.tensor([1.0, 1.1]), torch.tensor([0.0, 5.0])))
    assert torch.allclose(out[0], x[0], atol=1e-6) and not torch.allclose(out[1], x[1], atol=1e-2)


def test_affine_table_draws_within_its_ranges_and_repeats_for_a_seed():
    table = draw_affine_table(3, 500, 0.1, 10.0)
    assert table.shape == (500, 2)
    assert table[:, 0].min() >= 0.9 and table[:, 0].max() <= 1.1 and table[:, 1].abs().max() <= 10.0
    assert table[:, 1].std() > 4  # spread over the range, not stuck at 0
    assert torch.equal(table, draw_affine_table(3, 500, 0.1, 10.0))
    assert not torch.equal(table, draw_affine_table(4, 500, 0.1, 10.0))


class CountingNet(nn.Module):
    """A one-frame classifier that records the batch size of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.head(self.conv(x).relu().mean(dim=(2, 3)))


def test_fourier_path_runs_many_objectives_as_one_batch():
    torch.manual_seed(0)
    net = CountingNet()
    config = VisualizationConfig(steps=3, parameterization="fourier", scale_jitter=0.1, rotation_degrees=10,
                                 retry_below_probability=0.0)
    requests = [UnitRequest(target=k % 5, kappa=1.0, seed=k) for k in range(6)]
    results = visualize(net, [RGB_FRAME], requests, config, device="cpu")
    assert net.batches == [6] * (config.steps + 1)  # one forward per step for all rows, and one to score them
    assert len(results) == 6 and results[0].config["parameterization"] == "fourier"
    pixels = results[0].inputs["image"] * 0.5 + 0.5
    assert pixels.min() >= 0 and pixels.max() <= 1


def test_auto_is_fourier_on_real_frame_sizes_and_pixels_on_tiny_ones():
    from workers.engine.manifest import InputSpec
    from workers.engine.parameterization import AUTO_FOURIER_MIN_SIDE, resolve_kind
    big = InputSpec(name="x", modality="rgb", layout="NCHW", shape=[3, 224, 224])
    small = InputSpec(name="x", modality="rgb", layout="NCTHW", shape=[3, 8, 32, 32])
    edge = InputSpec(name="x", modality="flow", layout="NCTHW", shape=[2, 4, AUTO_FOURIER_MIN_SIDE, 200])
    assert [resolve_kind("auto", s) for s in (big, small, edge)] == ["fourier", "pixel", "fourier"]
    assert resolve_kind("pixel", big) == "pixel" and resolve_kind("fourier", small) == "fourier"


def test_fourier_streams_get_their_own_learning_rate_and_rgb_weights():
    config = VisualizationConfig()
    assert config.learning_rate("fourier") == config.fourier_lr and config.learning_rate("pixel") == config.lr
    assert config.weights("rgb", "fourier") == config.fourier_rgb and config.weights("rgb", "pixel") == config.rgb
    assert config.weights("flow", "fourier") == config.flow == config.weights("flow", "pixel")
    assert config.fourier_rgb.lp_weight == 0 and config.rgb.lp_weight > 0


def test_scale_and_rotation_jitter_default_to_lucents_ranges_on_large_frames_only():
    from workers.engine.config import LARGE_FRAME_MIN_SIDE
    from workers.engine.parameterization import AUTO_FOURIER_MIN_SIDE

    assert AUTO_FOURIER_MIN_SIDE == LARGE_FRAME_MIN_SIDE
    config = VisualizationConfig()
    assert config.affine_ranges(LARGE_FRAME_MIN_SIDE) == (0.1, 10.0)
    assert config.affine_ranges(LARGE_FRAME_MIN_SIDE - 1) == (0.0, 0.0)
    chosen = VisualizationConfig(scale_jitter=0.05, rotation_degrees=0)
    assert chosen.affine_ranges(224) == (0.05, 0.0) and chosen.affine_ranges(32) == (0.05, 0.0)


def test_the_optimiser_steps_each_stream_at_its_parameterisations_learning_rate(monkeypatch):
    import workers.engine.optimise as optimise_mod

    seen = []
    real_adam = torch.optim.Adam

    def recording_adam(groups, *args, **kwargs):
        seen.extend(g["lr"] for g in groups)
        return real_adam(groups, *args, **kwargs)

    monkeypatch.setattr(optimise_mod.torch.optim, "Adam", recording_adam)
    config = VisualizationConfig(steps=1, parameterization="fourier", lr=0.01, fourier_lr=0.2,
                                 retry_below_probability=0.0)
    visualize(CountingNet(), [RGB_FRAME], [UnitRequest(target=0, kappa=1.0, seed=0)], config, device="cpu")
    assert seen == [0.2]
    visualize(CountingNet(), [RGB_FRAME], [UnitRequest(target=0, kappa=1.0, seed=0)],
              config.model_copy(update={"parameterization": "pixel"}), device="cpu")
    assert seen == [0.2, 0.01]
