"""The architecture registry: built-in entries, plugins, refusals, and every torchvision video model loading
from a safetensors bundle and back-propagating to its input."""
from __future__ import annotations

import io
import json
import zipfile
from importlib.metadata import EntryPoint

import pytest
import torch
from safetensors.torch import save as save_safetensors

from workers.engine.architectures import TwoStreamVGG16, build_architecture, list_architectures, registry
from workers.engine.bundle import load_bundle
from workers.engine.config import VisualizationConfig
from workers.engine.errors import ModelLoadError
from workers.engine.optimise import forward_model, initial_inputs
from workers.engine.visualize import UnitRequest, visualize

TORCHVISION_NAMES = [
    "torchvision.r3d_18", "torchvision.mc3_18", "torchvision.r2plus1d_18",
    "torchvision.s3d", "torchvision.mvit_v1_b", "torchvision.swin3d_t",
]


def test_registry_lists_every_builtin_architecture() -> None:
    names = list_architectures()
    for name in TORCHVISION_NAMES + ["quirkscope.twostream_vgg16", "quirkscope.tiny_twostream"]:
        assert name in names
    assert names == sorted(names)


def test_unknown_architecture_error_lists_the_known_ones() -> None:
    with pytest.raises(ModelLoadError) as info:
        build_architecture("torchvision.r4d_99", 5)
    assert "unknown architecture 'torchvision.r4d_99'" in info.value.message
    assert "torchvision.r3d_18" in info.value.message and "quirkscope.twostream_vgg16" in info.value.message
    assert info.value.field == "manifest.architecture"


@pytest.mark.parametrize("kwarg", ["weights", "progress", "pretrained"])
def test_torchvision_entries_refuse_kwargs_that_would_download_weights(kwarg: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        build_architecture("torchvision.r3d_18", 5, **{kwarg: "KINETICS400_V1"})
    assert f"remove {kwarg} from architecture_kwargs" in info.value.message
    assert info.value.field == "manifest.architecture_kwargs"


def test_unknown_architecture_kwargs_give_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError) as info:
        build_architecture("quirkscope.tiny_twostream", 5, colour="blue")
    assert "could not be built with architecture_kwargs {'colour': 'blue'}" in info.value.message
    assert info.value.field == "manifest.architecture_kwargs"


def test_tiny_twostream_entry_builds_the_reference_net_with_its_kwargs() -> None:
    module = build_architecture("quirkscope.tiny_twostream", 6, frames=4, size=16, width=4, hidden=8)
    logits = module(torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 2, 4, 16, 16))
    assert logits.shape == (1, 6)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    """The registry with its plugins not yet discovered, restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PLUGIN_FAILURES", {})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    return monkeypatch


def test_plugin_entry_points_are_discovered(fresh_registry: pytest.MonkeyPatch) -> None:
    plugin = EntryPoint(name="acme.tiny", value="workers.engine.reference.model:TinyTwoStream",
                        group=registry.ENTRY_POINT_GROUP)
    seen_groups = []

    def fake_entry_points(*, group: str):
        seen_groups.append(group)
        return [plugin]

    fresh_registry.setattr(registry, "entry_points", fake_entry_points)
    assert "acme.tiny" in list_architectures()
    assert seen_groups == ["quirkscope.architectures"]
    module = build_architecture("acme.tiny", 3, frames=4, size=8, width=2, hidden=4)
    assert module(torch.zeros(1, 3, 4, 8, 8), torch.zeros(1, 2, 4, 8, 8)).shape == (1, 3)


def test_a_plugin_that_fails_to_import_is_named_when_built(fresh_registry: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="acme.broken", value="acme_not_installed.models:build",
                        group=registry.ENTRY_POINT_GROUP)
    fresh_registry.setattr(registry, "entry_points", lambda *, group: [broken])
    assert "acme.broken" not in list_architectures()
    with pytest.raises(ModelLoadError) as info:
        build_architecture("acme.broken", 3)
    assert "comes from a plugin that failed to load (ModuleNotFoundError" in info.value.message


def test_twostream_vgg16_builds_with_101_classes_and_10_flow_frames_and_runs_at_112() -> None:
    module = build_architecture("quirkscope.twostream_vgg16", 101, flow_frames=10)
    assert isinstance(module, TwoStreamVGG16)
    assert module.motion[0].in_channels == 20 and module.appearance[0].in_channels == 3
    assert module.fusion[0].in_channels == 1024 and module.fusion[0].out_channels == 512
    assert [m.out_features for m in module.head if isinstance(m, torch.nn.Linear)] == [4096, 4096, 101]
    module.eval()
    with torch.no_grad():
        logits = module(torch.randn(1, 3, 112, 112), torch.randn(1, 20, 112, 112))
    assert logits.shape == (1, 101) and torch.isfinite(logits).all()


def test_twostream_vgg16_accepts_a_1x1_fusion_and_refuses_other_kernels() -> None:
    module = build_architecture("quirkscope.twostream_vgg16", 5, flow_frames=2, fusion_kernel=1)
    assert module.fusion[0].kernel_size == (1, 1)
    with pytest.raises(ModelLoadError, match="fusion_kernel must be 1 or 3"):
        build_architecture("quirkscope.twostream_vgg16", 5, fusion_kernel=5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision.r3d_18", "torchvision.swin3d_t"])
def test_torch_export_of_a_torchvision_model_passes_the_pt2_vetting(name: str, tmp_path) -> None:
    """The .pt2 allow-lists must not refuse what torch.export.save writes for real architectures."""
    from workers.engine.bundle import write_bundle
    from workers.engine.manifest import parse_manifest

    manifest = parse_manifest({
        "name": name, "version": "1", "classes": ["a", "b", "c"], "format": "torch.export",
        "inputs": [{"name": "clip", "modality": "rgb", "layout": "NCTHW", "shape": [3, 4, 32, 32]}],
    })
    model = build_architecture(name, 3).eval()
    loaded = load_bundle(write_bundle(model, manifest, tmp_path / "b.zip", fmt="torch.export"))
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(clip), model(clip), atol=1e-4)


# (name, input C x T x H x W: the smallest each accepts, or the size it is fixed to)
VIDEO_CASES = [
    pytest.param("torchvision.r3d_18", (3, 4, 32, 32), id="r3d_18"),
    pytest.param("torchvision.mc3_18", (3, 4, 32, 32), id="mc3_18"),
    pytest.param("torchvision.r2plus1d_18", (3, 4, 32, 32), id="r2plus1d_18"),
    pytest.param("torchvision.swin3d_t", (3, 4, 32, 32), id="swin3d_t", marks=pytest.mark.slow),
    pytest.param("torchvision.s3d", (3, 16, 224, 224), id="s3d", marks=pytest.mark.slow),
    pytest.param("torchvision.mvit_v1_b", (3, 16, 224, 224), id="mvit_v1_b", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, shape", VIDEO_CASES)
def test_torchvision_video_architecture_loads_from_safetensors_and_the_engine_raises_its_class_logit(
    name: str, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    classes = ["walk", "run", "jump", "swim"]
    original = build_architecture(name, len(classes))
    manifest = {
        "name": name, "version": "1", "classes": classes, "format": "safetensors", "architecture": name,
        "inputs": [{"name": "clip", "modality": "rgb", "layout": "NCTHW", "shape": list(shape)}],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("weights.safetensors", save_safetensors(original.state_dict()))

    loaded = load_bundle(buffer.getvalue())

    state = loaded.module.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(state[key], value), key
    assert not loaded.module.training
    clip = torch.randn(1, *shape, requires_grad=True)
    logits = loaded.module(clip)
    assert logits.shape == (1, len(classes))
    logits[0, 1].backward()
    assert clip.grad is not None and clip.grad.abs().sum() > 0
    assert all(p.grad is None for p in loaded.module.parameters())

    # no jitter, scale or rotation, so that a few steps on the untransformed input must show in its logit
    specs = loaded.manifest.inputs
    config = VisualizationConfig(steps=8, contrast=0.0, jitter_fraction=0.0, jitter_frames=0, scale_jitter=0.0,
                                 rotation_degrees=0.0)
    with torch.no_grad():
        before = float(forward_model(loaded.module, specs, initial_inputs(specs, [0], config.init_scale),
                                     bf16=False, channels_last=False)[0, 1])
    [result] = visualize(loaded.module, specs, [UnitRequest(target=1, kappa=1.0, seed=0)], config, device="cpu")
    assert result.inputs["clip"].shape == shape
    assert result.logit > before  # the ascent raised the target logit over the noise it started from
