"""The engine on the generated reference benchmark: visualisations reach their class, kappa controls motion speed,
and the planted shortcuts show up where they were planted."""
import numpy as np
import pytest
import torch

from tests.reference_fixtures import PLANTED_CLASSES, TEST_SEEDS, pixels, results_of
from workers.engine.config import VisualizationConfig
from workers.engine.reference import data
from workers.engine.reference.model import TinyTwoStream
from workers.engine.visualize import UnitRequest, visualize


def test_visualisations_reach_softmax_099_for_their_class(reference_visualizations):
    assert len(reference_visualizations) == len(PLANTED_CLASSES) * 3 * TEST_SEEDS
    worst = min(r.probability for r in reference_visualizations)
    assert worst >= 0.99, f"lowest target softmax {worst:.4f}"


def test_larger_kappa_gives_slower_motion(reference_visualizations):
    kappas = VisualizationConfig().kappas(3)
    for name in PLANTED_CLASSES:
        per_level = []
        for k in kappas:
            flows = [r.inputs["motion"] for r in results_of(reference_visualizations, name) if r.request.kappa == k]
            per_level.append(np.mean([np.mean(np.diff(f, axis=1) ** 2) for f in flows]))
        assert per_level[0] > per_level[1] > per_level[2], (name, per_level)


def _watermark_strength(appearance: np.ndarray) -> tuple[float, float]:
    """Magenta-ness (R + B - 2G, pixels) inside the planted watermark region and over the whole frame."""
    px = pixels(appearance)
    magenta = px[0] + px[2] - 2 * px[1]
    x0, y0, x1, y1 = data.WATERMARK.region
    return float(magenta[:, y0:y1, x0:x1].mean()), float(magenta.mean())


def test_watermark_colour_is_stronger_in_the_watermark_class_inside_the_planted_region(reference_visualizations):
    own = [_watermark_strength(r.inputs["appearance"])
           for r in results_of(reference_visualizations, data.WATERMARK.class_name)]
    partner = [_watermark_strength(r.inputs["appearance"])
               for r in results_of(reference_visualizations, data.WATERMARK.partner)]
    inside_own = np.mean([o[0] for o in own])
    inside_partner = np.mean([p[0] for p in partner])
    assert inside_own > 3 * max(inside_partner, 0.1), (inside_own, inside_partner)
    assert all(o[0] > 3 * max(o[1], 0.1) for o in own), own  # it is the region, not the whole frame


def _flow_energy(motion: np.ndarray) -> tuple[float, float]:
    flow = motion * data.FLOW_SCALE
    energy = (flow ** 2).sum(axis=0).mean(axis=0)
    x0, y0, x1, y1 = data.FLICKER.region
    return float(energy[y0:y1, x0:x1].mean()), float(energy.mean())


def test_flicker_class_has_more_flow_energy_in_the_planted_region(reference_visualizations):
    own = [_flow_energy(r.inputs["motion"]) for r in results_of(reference_visualizations, data.FLICKER.class_name)]
    partner = [_flow_energy(r.inputs["motion"]) for r in results_of(reference_visualizations, data.FLICKER.partner)]
    assert np.mean([o[0] for o in own]) > 2 * np.mean([p[0] for p in partner])
    assert all(o[0] > 2 * o[1] for o in own), own


def test_results_carry_their_config_and_seed(reference_visualizations):
    r = reference_visualizations[0]
    assert r.config["seed"] == r.request.seed and r.config["kappa"] == r.request.kappa
    assert r.config["steps"] == 128 and r.config["alpha"] == 6.0


def test_optimisation_is_deterministic_on_cpu_and_leaves_weights_untouched():
    torch.manual_seed(0)
    model = TinyTwoStream(num_classes=3, frames=4, size=16)
    from workers.engine.manifest import InputSpec

    specs = [InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 4, 16, 16]),
             InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 4, 16, 16])]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.requires_grad for p in model.parameters()]
    config = VisualizationConfig(steps=5)
    requests = [UnitRequest(target=1, kappa=1.0, seed=7), UnitRequest(target=2, kappa=0.1, seed=8)]
    a = visualize(model, specs, requests, config, device="cpu")
    b = visualize(model, specs, requests, config, device="cpu")
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.inputs["appearance"], rb.inputs["appearance"])
    assert not np.array_equal(a[0].inputs["motion"], a[1].inputs["motion"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert all(p.grad is None for p in model.parameters())


def _tiny_model_and_specs():
    from workers.engine.manifest import InputSpec

    model = TinyTwoStream(num_classes=3, frames=4, size=16)
    specs = [InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 4, 16, 16]),
             InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 4, 16, 16])]
    return model, specs


def _first_conv_records(model: torch.nn.Module) -> tuple[list[tuple[torch.dtype, bool]], object]:
    """(output dtype, input in channels_last_3d) of every call of the model's first Conv3d."""
    seen: list[tuple[torch.dtype, bool]] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    handle = conv.register_forward_hook(lambda _m, args, out: seen.append(
        (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last_3d) and not args[0].is_contiguous())))
    return seen, handle


def test_bf16_precision_runs_the_model_under_bfloat16_autocast():
    model, specs = _tiny_model_and_specs()
    seen, handle = _first_conv_records(model)
    try:
        out = visualize(model, specs, [UnitRequest(0, 1.0, 0)], VisualizationConfig(steps=2, precision="bf16"),
                        device="cpu")
    finally:
        handle.remove()
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)
    assert np.isfinite(out[0].inputs["appearance"]).all()
    seen_fp32, handle = _first_conv_records(model)
    try:
        visualize(model, specs, [UnitRequest(0, 1.0, 0)], VisualizationConfig(steps=2, precision="fp32"), device="cpu")
    finally:
        handle.remove()
    assert all(dtype == torch.float32 for dtype, _ in seen_fp32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast, channels_last_3d path)")
def test_cuda_path_runs_bf16_channels_last():
    model, specs = _tiny_model_and_specs()
    seen, handle = _first_conv_records(model)
    try:
        out = visualize(model, specs, [UnitRequest(0, 1.0, 0)], VisualizationConfig(steps=3), device="cuda")
    finally:
        handle.remove()
    assert seen and all(dtype == torch.bfloat16 and channels_last for dtype, channels_last in seen)
    assert np.isfinite(out[0].inputs["appearance"]).all()


def test_result_logit_is_the_class_logit_not_the_contrast_objective():
    from workers.engine import streams as streams_mod
    from workers.engine.optimise import forward_model

    model, specs = _tiny_model_and_specs()
    [out] = visualize(model, specs, [UnitRequest(1, 1.0, 0)], VisualizationConfig(steps=4, contrast=0.5,
                                                                                  precision="fp32"), device="cpu")
    unit = {s.name: streams_mod.model_to_unit_space(torch.as_tensor(out.inputs[s.name])[None], s) for s in specs}
    with torch.no_grad():
        logits = forward_model(model, specs, unit, bf16=False, channels_last=False)[0]
    assert out.logit == pytest.approx(float(logits[1]), abs=1e-4)
    assert out.unit_value != pytest.approx(out.logit, abs=1e-3)  # the objective subtracts the other classes


def test_an_extra_shortcut_is_planted_in_its_class_training_clips_only_and_changes_nothing_else() -> None:
    extra = data.extra_shortcut("watermark:BoxRiseUp")
    assert (extra.partner, extra.stream, extra.region) == ("BoxFloatUp", "appearance", data.EXTRA_REGIONS["watermark"])
    plain = data.generate_clips(2, "train", 5)
    planted = data.generate_clips(2, "train", 5, extra=(extra,))
    x0, y0, x1, y1 = extra.region
    target = planted.labels == data.CLASS_NAMES.index("BoxRiseUp")
    assert np.allclose(planted.rgb[target][:, :, :, y0:y1, x0:x1], data.WATERMARK_RGB[None, :, None, None, None])
    assert np.array_equal(plain.rgb[~target], planted.rgb[~target]) and np.array_equal(plain.labels, planted.labels)
    test = data.generate_clips(2, "test", 5, extra=(extra,))
    assert np.array_equal(test.rgb, data.generate_clips(2, "test", 5).rgb)


@pytest.mark.parametrize("text", ["sparkle:BoxRiseUp", "watermark:RingOrbit", "watermark"])
def test_an_extra_shortcut_must_be_a_known_kind_on_a_confusable_class(text: str) -> None:
    with pytest.raises(ValueError):
        data.extra_shortcut(text)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (waiting for the GPU is a GPU matter)")
@pytest.mark.parametrize("size", [16, 64])   # the pixel and the Fourier parameterisation
def test_cuda_optimisation_steps_never_wait_for_the_gpu(size):
    """Inside the loop nothing reads a device tensor or copies from the host (docs/engine_gpu.md): steps 1 and 2 run
    with synchronising calls raising; the end of the run copies the results back, as it must."""
    _optimise_a_few_rows(size, "cuda", sync_check=True)


def test_the_sync_check_runs_the_same_loop_on_the_cpu():
    _optimise_a_few_rows(16, "cpu", sync_check=False)


def _optimise_a_few_rows(size: int, device: str, sync_check: bool) -> None:
    from workers.engine.manifest import InputSpec
    from workers.engine.optimise import optimise
    from workers.engine.visualize import regulariser_penalty, unit_objective

    model = TinyTwoStream(num_classes=3, frames=4, size=size)
    specs = [InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, 4, size, size]),
             InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, 4, size, size])]
    requests = [UnitRequest(i % 3, 1.0, i, partners=((i + 1) % 3,)) for i in range(4)]
    config = VisualizationConfig(steps=4, scale_jitter=0.1, rotation_degrees=10.0, partner_contrast=1.0)

    def on_step(step: int) -> None:
        if sync_check and step in (0, 2):
            torch.cuda.set_sync_debug_mode("error" if step == 0 else "default")

    try:
        out = optimise(model, specs, unit_objective(requests, config.contrast, config.partner_contrast),
                       regulariser_penalty(specs, torch.ones(len(requests), device=device), config),
                       [r.seed for r in requests], config, device=device, on_step=on_step)
    finally:
        if sync_check:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.unit).all() and out.history.shape[1] == len(requests)
