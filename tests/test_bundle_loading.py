"""Loading and writing model bundles: round trips through the three formats, the sources a bundle may come
from, and the message (and field) of every way a well-meant bundle can be wrong."""
from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from workers.engine.bundle import LoadedModel, export_from_spec, load_bundle, write_bundle
from workers.engine.errors import BundleError, InvalidInput, ModelLoadError
from workers.engine.manifest import Manifest, parse_manifest
from workers.engine.reference.model import TinyTwoStream

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling"]
TINY_KWARGS = {"frames": 4, "size": 16, "width": 4, "hidden": 16}
FORMATS = ["onnx", "safetensors", "torch.export"]


def tiny_manifest(fmt: str = "onnx", **changes: object) -> Manifest:
    data = {
        "name": "tiny-twostream", "version": "2026.11.1", "classes": CLASSES, "format": fmt,
        "architecture": "quirkscope.tiny_twostream", "architecture_kwargs": TINY_KWARGS,
        "inputs": [
            {"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, 4, 16, 16],
             "mean": [0.43, 0.39, 0.37], "std": [0.23, 0.22, 0.22]},
            {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, 4, 16, 16], "scale": 20.0},
        ],
    }
    data.update(changes)
    return parse_manifest(data)


def build_tiny_model() -> nn.Module:
    """A ``package.module:function`` target for export_from_spec (the user's own code)."""
    torch.manual_seed(0)
    return TinyTwoStream(num_classes=len(CLASSES), **TINY_KWARGS)


def zip_bytes(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def with_manifest(path: Path, **changes: object) -> bytes:
    """The bundle at ``path`` with some manifest fields replaced."""
    members = members_of(path)
    manifest = json.loads(members["manifest.json"]) | changes
    return zip_bytes(members | {"manifest.json": json.dumps(manifest)})


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    return build_tiny_model().eval()


@pytest.fixture(scope="module")
def bundles(tiny_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    return {fmt: write_bundle(tiny_model, tiny_manifest(), out / f"tiny-{fmt}.zip", fmt=fmt) for fmt in FORMATS}


# --- round trips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_reproduces_logits_and_gives_input_gradients(fmt: str, tiny_model: nn.Module,
                                                               bundles: dict[str, Path]) -> None:
    loaded = load_bundle(bundles[fmt])

    assert isinstance(loaded, LoadedModel)
    assert loaded.manifest.format == fmt and loaded.manifest.classes == CLASSES
    assert loaded.sha256 == hashlib.sha256(bundles[fmt].read_bytes()).hexdigest()
    assert not loaded.module.training
    assert all(not p.requires_grad for p in loaded.module.parameters())
    gen = torch.Generator().manual_seed(3)
    appearance = torch.randn(3, 3, 4, 16, 16, generator=gen, requires_grad=True)
    motion = torch.randn(3, 2, 4, 16, 16, generator=gen, requires_grad=True)
    logits = loaded.module(appearance, motion)
    with torch.no_grad():
        expected = tiny_model(appearance, motion)
    assert logits.shape == (3, len(CLASSES))
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0)
    logits[:, 2].sum().backward()
    assert appearance.grad.abs().sum() > 0 and motion.grad.abs().sum() > 0
    assert all(p.grad is None for p in loaded.module.parameters())


def test_bundle_loads_the_same_from_bytes_and_from_a_directory(bundles: dict[str, Path], tmp_path: Path) -> None:
    data = bundles["onnx"].read_bytes()
    from_bytes = load_bundle(data)
    assert from_bytes.sha256 == hashlib.sha256(data).hexdigest()
    for name, content in members_of(bundles["onnx"]).items():
        (tmp_path / name).write_bytes(content)
    from_dir = load_bundle(tmp_path)
    x = (torch.randn(2, 3, 4, 16, 16), torch.randn(2, 2, 4, 16, 16))
    assert torch.equal(from_bytes.module(*x), from_dir.module(*x))
    assert len(from_dir.sha256) == 64


def test_bundle_zipped_inside_one_folder_loads(bundles: dict[str, Path]) -> None:
    members = {f"my-model/{name}": data for name, data in members_of(bundles["safetensors"]).items()}
    assert load_bundle(zip_bytes(members)).manifest.name == "tiny-twostream"


def test_write_bundle_into_a_directory_names_the_zip_after_the_model(tiny_model: nn.Module, tmp_path: Path) -> None:
    path = write_bundle(tiny_model, tiny_manifest(), tmp_path, fmt="safetensors")
    assert path == tmp_path / "tiny-twostream-2026.11.1.zip"
    assert sorted(members_of(path)) == ["manifest.json", "weights.safetensors"]
    assert json.loads(members_of(path)["manifest.json"])["format"] == "safetensors"


def test_write_bundle_to_a_new_folder_creates_it(tiny_model: nn.Module, tmp_path: Path) -> None:
    path = write_bundle(tiny_model, tiny_manifest(), tmp_path / "exports" / "v1", fmt="onnx")
    assert path == tmp_path / "exports" / "v1" / "tiny-twostream-2026.11.1.zip" and path.is_file()


def test_onnx_with_initializers_shared_through_identity_nodes_round_trips(tmp_path: Path) -> None:
    """Freshly initialised conv + batch-norm pairs fold to identical zero biases, which the TorchScript exporter
    shares through Identity nodes; onnx2torch alone cannot convert those."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(3, 4, 3, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
        nn.Conv3d(4, 4, 3, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()
    manifest = parse_manifest({
        "name": "bn", "version": "1", "classes": ["a", "b"], "format": "onnx",
        "inputs": [{"name": "clip", "modality": "rgb", "layout": "NCTHW", "shape": [3, 6, 8, 8]}],
    })
    path = write_bundle(model, manifest, tmp_path / "bn.zip")
    import onnx

    assert "Identity" in {n.op_type for n in onnx.load_from_string(members_of(path)["model.onnx"]).graph.node}
    clip = torch.randn(3, 3, 6, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load_bundle(path).module(clip), model(clip), atol=1e-5)


def test_write_bundle_onnx_makes_the_batch_axis_dynamic_on_inputs_and_output(bundles: dict[str, Path]) -> None:
    import onnx

    model = onnx.load_from_string(members_of(bundles["onnx"])["model.onnx"])
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    assert [v.name for v in model.graph.input] == ["appearance", "motion"]


def test_write_bundle_safetensors_refuses_a_model_that_is_not_the_named_architecture(tmp_path: Path) -> None:
    other = TinyTwoStream(num_classes=len(CLASSES), **(TINY_KWARGS | {"width": 2}))
    with pytest.raises(ModelLoadError) as info:
        write_bundle(other, tiny_manifest(), tmp_path / "x.zip", fmt="safetensors")
    assert "the model is not architecture 'quirkscope.tiny_twostream' with 4 classes" in info.value.message
    assert "appearance.0.weight is [2, 3, 3, 3, 3] in the file but [4, 3, 3, 3, 3] in the model" in info.value.message
    assert not (tmp_path / "x.zip").exists()


def test_write_bundle_safetensors_needs_an_architecture(tiny_model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(BundleError) as info:
        write_bundle(tiny_model, tiny_manifest(architecture=None), tmp_path / "x.zip", fmt="safetensors")
    assert "format 'safetensors' needs an 'architecture' from the registry" in info.value.message


def test_export_from_spec_imports_the_users_function_and_writes_a_loadable_bundle(tmp_path: Path) -> None:
    path = export_from_spec("tests.test_bundle_loading:build_tiny_model", tiny_manifest(), tmp_path / "b.zip")
    loaded = load_bundle(path)
    x = (torch.randn(2, 3, 4, 16, 16), torch.randn(2, 2, 4, 16, 16))
    with torch.no_grad():
        assert torch.allclose(loaded.module(*x), build_tiny_model().eval()(*x), atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("no_colon_here", "'no_colon_here' is not of the form package.module:function"),
    ("acme_missing_pkg.models:build", "could not import acme_missing_pkg.models: ModuleNotFoundError"),
    ("tests.test_bundle_loading:no_such_function", "tests.test_bundle_loading has no attribute 'no_such_function'"),
    ("tests.test_bundle_loading:CLASSES", "tests.test_bundle_loading:CLASSES is not callable"),
    ("tests.test_bundle_loading:tiny_manifest", "returned Manifest, not a torch.nn.Module"),
])
def test_export_from_spec_reports_a_bad_spec_as_invalid_input(spec: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        export_from_spec(spec, tiny_manifest(), tmp_path / "b.zip")
    assert message in info.value.message
    assert info.value.field == "spec"


# --- what a well-meant bundle can get wrong ----------------------------------------------------------------

def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_text("just some text")
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    assert "bundle.zip is not a zip archive" in info.value.message
    assert info.value.field == "bundle"


def test_a_missing_bundle_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere.zip")


def test_a_bundle_without_manifest_is_refused(bundles: dict[str, Path]) -> None:
    members = members_of(bundles["onnx"])
    del members["manifest.json"]
    with pytest.raises(BundleError) as info:
        load_bundle(zip_bytes(members))
    assert info.value.message == "bundle has no manifest.json"
    assert info.value.field == "manifest"


def test_a_bare_pt2_without_manifest_gets_a_hint(bundles: dict[str, Path]) -> None:
    with pytest.raises(BundleError) as info:
        load_bundle(members_of(bundles["torch.export"])["model.pt2"])
    assert "has no manifest.json (this looks like a bare model.pt2" in info.value.message


def test_a_missing_manifest_field_is_named(bundles: dict[str, Path]) -> None:
    members = members_of(bundles["onnx"])
    manifest = json.loads(members["manifest.json"])
    del manifest["classes"]
    with pytest.raises(BundleError) as info:
        load_bundle(zip_bytes(members | {"manifest.json": json.dumps(manifest)}))
    assert info.value.message == "manifest field classes is missing: Field required"
    assert info.value.field == "manifest.classes"


def test_a_missing_model_file_for_the_declared_format_is_named(bundles: dict[str, Path]) -> None:
    data = with_manifest(bundles["onnx"], format="torch.export")
    with pytest.raises(BundleError) as info:
        load_bundle(data)
    assert info.value.message == "bundle has no model.pt2, which format 'torch.export' needs (it holds model.onnx)"
    assert info.value.field == "model.pt2"


def test_two_model_files_are_refused_as_ambiguous(bundles: dict[str, Path]) -> None:
    weights = members_of(bundles["safetensors"])["weights.safetensors"]
    members = members_of(bundles["onnx"]) | {"weights.safetensors": weights}
    with pytest.raises(BundleError) as info:
        load_bundle(zip_bytes(members))
    assert "holds several model files (model.onnx, weights.safetensors)" in info.value.message


def test_an_unknown_architecture_is_refused_with_the_known_ones(bundles: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_bundle(with_manifest(bundles["safetensors"], architecture="acme.resnet9000"))
    assert info.value.message.startswith("unknown architecture 'acme.resnet9000'; known architectures: ")
    assert "torchvision.r2plus1d_18" in info.value.message
    assert info.value.field == "manifest.architecture"


def test_a_state_dict_mismatch_names_the_keys(bundles: dict[str, Path]) -> None:
    members = members_of(bundles["safetensors"])
    state = build_tiny_model().state_dict()
    del state["head.4.bias"]
    state["head.9.weight"] = torch.zeros(2)
    with pytest.raises(ModelLoadError) as info:
        load_bundle(zip_bytes(members | {"weights.safetensors": save_safetensors(state)}))
    assert info.value.message == (
        "weights.safetensors does not match architecture 'quirkscope.tiny_twostream' with 4 classes: "
        "1 missing (head.4.bias); 1 unexpected (head.9.weight)"
    )
    assert info.value.field == "weights.safetensors"


@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
def test_class_count_that_differs_from_the_logits_is_refused(fmt: str, bundles: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_bundle(with_manifest(bundles[fmt], classes=CLASSES + ["Basketball"]))
    assert info.value.message == "manifest lists 5 classes but the model returns 4 logits"
    assert info.value.field == "manifest.classes"


def test_input_shapes_that_do_not_fit_the_model_name_the_shapes_tried(bundles: dict[str, Path]) -> None:
    manifest = json.loads(members_of(bundles["safetensors"])["manifest.json"])
    manifest["inputs"][1]["shape"] = [2, 6, 16, 16]  # motion frames != appearance frames: no fusion possible
    with pytest.raises(ModelLoadError) as info:
        load_bundle(with_manifest(bundles["safetensors"], inputs=manifest["inputs"]))
    assert info.value.message.startswith(
        "the model does not run on inputs of the manifest's shapes "
        "(appearance (2, 3, 4, 16, 16), motion (2, 2, 6, 16, 16)): RuntimeError: "
    )
    assert info.value.field == "manifest.inputs"


def test_onnx_input_shape_that_differs_from_the_manifest_is_named(bundles: dict[str, Path]) -> None:
    manifest = json.loads(members_of(bundles["onnx"])["manifest.json"])
    manifest["inputs"][1]["shape"] = [2, 4, 32, 32]
    with pytest.raises(ModelLoadError) as info:
        load_bundle(with_manifest(bundles["onnx"], inputs=manifest["inputs"]))
    assert info.value.message == (
        "model.onnx input 'motion' has shape [N, 2, 4, 16, 16] but the manifest declares 'motion' as "
        "[2, 4, 32, 32] (without the batch axis)"
    )


def test_onnx_with_a_different_number_of_inputs_is_refused(bundles: dict[str, Path]) -> None:
    manifest = json.loads(members_of(bundles["onnx"])["manifest.json"])
    with pytest.raises(ModelLoadError) as info:
        load_bundle(with_manifest(bundles["onnx"], inputs=manifest["inputs"][:1]))
    assert info.value.message == (
        "model.onnx takes 2 inputs (appearance, motion) but the manifest declares 1 (appearance)"
    )
    assert info.value.field == "manifest.inputs"


def test_static_batch_axis_is_refused_with_reexport_hint(tiny_model: nn.Module, bundles: dict[str, Path]) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_model, (torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 2, 4, 16, 16)), buffer,
                          dynamo=False, opset_version=17, input_names=["appearance", "motion"],
                          output_names=["logits"])
    members = members_of(bundles["onnx"]) | {"model.onnx": buffer.getvalue()}
    with pytest.raises(ModelLoadError) as info:
        load_bundle(zip_bytes(members))
    assert info.value.message.startswith(
        "model.onnx has a static batch axis (size 1) on input 'appearance'; re-export with a dynamic batch axis"
    )
    assert "`quirkscope export`" in info.value.message
    assert info.value.field == "model.onnx"


def test_static_batch_axis_in_pt2_is_refused_with_reexport_hint(tiny_model: nn.Module,
                                                                 bundles: dict[str, Path]) -> None:
    ep = torch.export.export(tiny_model, (torch.zeros(2, 3, 4, 16, 16), torch.zeros(2, 2, 4, 16, 16)))
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    members = members_of(bundles["torch.export"]) | {"model.pt2": buffer.getvalue()}
    with pytest.raises(ModelLoadError) as info:
        load_bundle(zip_bytes(members))
    assert info.value.message.startswith(
        "model.pt2 has a static batch axis (size 2) on input 'appearance'; re-export with a dynamic batch axis"
    )
    assert info.value.field == "model.pt2"


def test_pt2_exported_in_training_mode_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 4, 8, 8))
    manifest = parse_manifest({
        "name": "bn", "version": "1", "classes": ["a", "b"], "format": "torch.export",
        "inputs": [{"name": "clip", "modality": "rgb", "layout": "NCTHW", "shape": [3, 4, 8, 8]}],
    })
    ep = torch.export.export(model.train(), (torch.zeros(2, 3, 4, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    members = {"manifest.json": manifest.model_dump_json(), "model.pt2": buffer.getvalue()}
    with pytest.raises(ModelLoadError) as info:
        load_bundle(zip_bytes(members))
    assert info.value.message == (
        "model.pt2 was exported in training mode (aten.batch_norm.default runs with training=True); "
        "call model.eval() before torch.export.export"
    )


def test_onnx_that_is_not_a_protobuf_is_refused(bundles: dict[str, Path]) -> None:
    members = members_of(bundles["onnx"]) | {"model.onnx": b"\x0a\xff\xff\xff garbage"}
    with pytest.raises(BundleError) as info:
        load_bundle(zip_bytes(members))
    assert info.value.message.startswith("model.onnx is not a valid ONNX model")
    assert info.value.field == "model.onnx"


def test_check_forward_false_skips_the_logits_check(bundles: dict[str, Path]) -> None:
    data = with_manifest(bundles["onnx"], classes=CLASSES + ["Basketball"])
    assert load_bundle(data, check_forward=False).manifest.classes[-1] == "Basketball"
