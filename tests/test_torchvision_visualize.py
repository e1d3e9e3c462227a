"""Torchvision video architectures: loaded from a safetensors bundle, one optimisation step of the engine."""
import pytest
import torch
from safetensors.torch import save_file
import zipfile

from workers.engine.architectures import build_architecture
from workers.engine.bundle import load_bundle
from workers.engine.config import VisualizationConfig
from workers.engine.visualize import UnitRequest, visualize

CASES = [("torchvision.r3d_18", [3, 4, 32, 32]), ("torchvision.r2plus1d_18", [3, 4, 32, 32]),
         ("torchvision.mc3_18", [3, 4, 32, 32]),
         pytest.param("torchvision.swin3d_t", [3, 4, 32, 32], marks=pytest.mark.slow),
         pytest.param("torchvision.s3d", [3, 16, 224, 224], marks=pytest.mark.slow),
         pytest.param("torchvision.mvit_v1_b", [3, 16, 224, 224], marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch,shape", CASES)
def test_torchvision_video_model_loads_from_safetensors_and_runs_one_step(tmp_path, arch, shape):
    import json

    classes = ["a", "b", "c"]
    model = build_architecture(arch, num_classes=len(classes))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    manifest = {"name": "tv", "version": "1", "classes": classes, "format": "safetensors", "architecture": arch,
                "inputs": [{"name": "clip", "modality": "rgb", "layout": "NCTHW", "shape": shape,
                            "mean": [0.43, 0.39, 0.37], "std": [0.23, 0.22, 0.22]}]}
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.write(tmp_path / "weights.safetensors", "weights.safetensors")
    loaded = load_bundle(bundle)
    out = visualize(loaded.module, loaded.manifest.inputs, [UnitRequest(target=1, kappa=1.0, seed=0)],
                    VisualizationConfig(steps=1), device="cpu")
    start = 0.01  # init_scale: the step moved the input away from its small-noise start
    assert out[0].inputs["clip"].shape == tuple(shape)
    assert abs(out[0].inputs["clip"]).max() > start
    assert torch.isfinite(torch.tensor(out[0].unit_value))
