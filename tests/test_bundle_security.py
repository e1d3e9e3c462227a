"""Bundles must never run code from the upload: pickles, checkpoints and TorchScript are refused; a .pt2 is
vetted before torch.export.load sees it; zip tricks are refused. Where a test plants a payload, a control
shows that the unguarded library call does run it, so the refusal is what keeps the marker file away."""
from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from onnx2torch import convert

from workers.engine.bundle import load_bundle, write_bundle
from workers.engine.errors import BundleError, UnsafeBundle
from workers.engine.manifest import Manifest, parse_manifest
from workers.engine.reference.model import TinyTwoStream

TINY_KWARGS = {"frames": 4, "size": 16, "width": 4, "hidden": 16}


class WritesMarker:
    """Unpickling this creates the file at ``path``: it stands in for any code an attacker would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def tiny_manifest(fmt: str) -> Manifest:
    return parse_manifest({
        "name": "tiny", "version": "1", "classes": ["a", "b", "c"], "format": fmt,
        "architecture": "quirkscope.tiny_twostream", "architecture_kwargs": TINY_KWARGS,
        "inputs": [
            {"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": [3, 4, 16, 16]},
            {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": [2, 4, 16, 16]},
        ],
    })


def zip_bytes(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        for name, data in members.items() if isinstance(members, dict) else members:
            zf.writestr(name, data)
    return buffer.getvalue()


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    torch.manual_seed(0)
    model = TinyTwoStream(num_classes=3, **TINY_KWARGS).eval()
    out = tmp_path_factory.mktemp("secure")
    return {fmt: write_bundle(model, tiny_manifest(fmt), out / f"{fmt}.zip", fmt=fmt).read_bytes()
            for fmt in ("onnx", "torch.export")}


@pytest.fixture(scope="module")
def legit_pt2(tiny_bundles: dict[str, bytes]) -> bytes:
    return members_of(tiny_bundles["torch.export"])["model.pt2"]


def rewrite_pt2(pt2: bytes, change: Callable[[str, bytes], bytes] = lambda name, data: data,
                extra: dict[str, bytes] | None = None) -> bytes:
    """The archive with each member passed through ``change(relative_name, data)`` and ``extra`` added."""
    src = members_of(pt2)
    root = next(iter(src)).split("/", 1)[0] + "/"
    out = {name: change(name[len(root):], data) for name, data in src.items()}
    out |= {root + name: data for name, data in (extra or {}).items()}
    return zip_bytes(out)


def pt2_bundle(pt2: bytes) -> bytes:
    return zip_bytes({"manifest.json": tiny_manifest("torch.export").model_dump_json(), "model.pt2": pt2})


def edit_program(edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name != "models/model.json":
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()
    return change


def raw_torch_export_load(pt2: bytes) -> None:
    """What an unguarded service would do (the control)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(io.BytesIO(pt2)).module()
            module(torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 2, 4, 16, 16))
    except Exception:
        pass


def poison_sample_inputs(marker: Path) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name != "data/sample_inputs/model.pt":
            return data
        buffer = io.BytesIO()
        torch.save((WritesMarker(marker),), buffer)
        return buffer.getvalue()
    return change


def poison_first_weight(marker: Path) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            buffer = io.BytesIO()
            torch.save(WritesMarker(marker), buffer)
            return buffer.getvalue()
        return data
    return change


def add_guard(marker: Path) -> Callable[[str, bytes], bytes]:
    return edit_program(lambda p: p["guards_code"].append(f"open('{marker}', 'w') is not None"))


def poison_symbolic_size(marker: Path) -> Callable[[str, bytes], bytes]:
    def edit(program: dict) -> None:
        sizes = program["graph_module"]["graph"]["tensor_values"]["appearance"]["sizes"]
        sizes[0]["as_expr"]["expr_str"] += f" + 0*len(str(open('{marker}', 'w')))"
    return edit_program(edit)


@pytest.mark.parametrize("poison, message", [
    (poison_sample_inputs,
     "model.pt2 member 'data/sample_inputs/model.pt' holds a pickle the weights-only unpickler refuses"),
    (poison_first_weight, "model.pt2 member 'data/weights/weight_0' holds a pickle the weights-only unpickler refuses"),
    (add_guard, "model.pt2 holds a guard outside the allowed grammar at models/model.json.guards_code"),
    (poison_symbolic_size, "model.pt2 holds a symbolic expression outside the allowed grammar at "
                           "models/model.json.graph_module.graph.tensor_values.appearance.sizes[0].as_expr.expr_str"),
], ids=["pickled-sample-inputs", "pickled-weight", "guards-code", "sympy-expression"])
def test_pt2_payload_is_refused_and_never_runs(poison, message: str, legit_pt2: bytes, tmp_path: Path) -> None:
    control_marker, marker = tmp_path / "control-ran", tmp_path / "payload-ran"
    raw_torch_export_load(rewrite_pt2(legit_pt2, poison(control_marker)))
    assert control_marker.exists(), "the planted payload should run under a plain torch.export.load"

    with pytest.raises(UnsafeBundle) as info:
        load_bundle(pt2_bundle(rewrite_pt2(legit_pt2, poison(marker))))

    assert info.value.message.startswith(message)
    assert info.value.message.endswith("refused (it could run code when loaded)")
    assert info.value.field == "model.pt2"
    assert not marker.exists()


@pytest.mark.parametrize("member", [
    "data/aotinductor/model/model.so", "data/constants/opaque_obj_0", "data/constants/custom_obj_0",
    "data/weights/model.pt", "models/second.json",
])
def test_pt2_member_outside_the_allow_list_is_refused(member: str, legit_pt2: bytes) -> None:
    with pytest.raises(UnsafeBundle) as info:
        load_bundle(pt2_bundle(rewrite_pt2(legit_pt2, extra={member: b"\x80\x04N."})))
    assert info.value.message.startswith(
        f"model.pt2 holds '{member}', which is not a member of a one-model torch.export.save archive"
    )


def test_pt2_graph_calling_a_non_aten_target_is_refused(legit_pt2: bytes) -> None:
    def edit(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.pickle.loads"
    with pytest.raises(UnsafeBundle) as info:
        load_bundle(pt2_bundle(rewrite_pt2(legit_pt2, edit_program(edit))))
    assert "calls 'torch.serialization.pickle.loads' at models/model.json.graph_module.graph.nodes[0]" \
        in info.value.message
    assert "only ATen operators are allowed" in info.value.message


def test_pt2_pytree_spec_that_would_import_a_module_is_refused(legit_pt2: bytes) -> None:
    spec = {"type": "collections.defaultdict", "children_spec": [],
            "context": json.dumps({"default_factory_module": "antigravity", "default_factory_name": "x",
                                   "dict_context": []})}

    def edit(program: dict) -> None:
        program["graph_module"]["module_call_graph"][0]["signature"]["out_spec"] = json.dumps([1, spec])
    with pytest.raises(UnsafeBundle) as info:
        load_bundle(pt2_bundle(rewrite_pt2(legit_pt2, edit_program(edit))))
    assert "holds a pytree spec of type 'collections.defaultdict'" in info.value.message


def test_pt2_with_a_name_that_would_be_pasted_into_python_source_is_refused(legit_pt2: bytes) -> None:
    def edit(program: dict) -> None:
        spec = program["graph_module"]["signature"]["input_specs"][0]["parameter"]
        spec["parameter_name"] = 'appearance.x"),open("pwned","w"),getattr(self,"y'
    with pytest.raises(UnsafeBundle, match="holds an unexpected name"):
        load_bundle(pt2_bundle(rewrite_pt2(legit_pt2, edit_program(edit))))


def test_trusted_pt2_skips_the_allow_list_but_untrusted_does_not(legit_pt2: bytes) -> None:
    bundle = pt2_bundle(rewrite_pt2(legit_pt2, extra={"data/notes.txt": b"exported on Tuesday"}))
    with pytest.raises(UnsafeBundle, match="holds 'data/notes.txt'"):
        load_bundle(bundle)
    assert load_bundle(bundle, trusted_pt2=True).manifest.format == "torch.export"


def test_pt2_with_a_duplicate_member_is_refused(legit_pt2: bytes) -> None:
    src = members_of(legit_pt2)
    name = next(n for n in src if n.endswith("data/sample_inputs/model.pt"))
    pt2 = zip_bytes(list(src.items()) + [(name, b"\x80\x04N.")])
    with pytest.raises(UnsafeBundle, match="model.pt2 lists a member twice"):
        load_bundle(pt2_bundle(pt2))


# --- pickles, checkpoints, TorchScript ---------------------------------------------------------------------

def pickle_upload_variants(marker: Path, tiny_onnx_bundle: bytes, tmp_path: Path) -> dict[str, object]:
    payload = pickle.dumps(WritesMarker(marker), protocol=4)
    checkpoint = io.BytesIO()
    torch.save({"state_dict": WritesMarker(marker)}, checkpoint)
    pt_path = tmp_path / "model.pt"
    pt_path.write_bytes(checkpoint.getvalue())
    manifest = members_of(tiny_onnx_bundle)["manifest.json"]
    onnx_model = members_of(tiny_onnx_bundle)["model.onnx"]
    return {
        "raw-pickle-bytes": payload,
        "torch-save-file.pt": pt_path,
        "torch-save-bytes": checkpoint.getvalue(),
        "bundle-with-model.pt": zip_bytes({"manifest.json": manifest, "model.onnx": onnx_model,
                                           "model.pt": checkpoint.getvalue()}),
        "pickle-named-model.onnx": zip_bytes({"manifest.json": manifest, "model.onnx": payload}),
    }


@pytest.mark.parametrize("variant, message", [
    ("raw-pickle-bytes", "bundle is a Python pickle, which runs code when loaded; export the model to ONNX "
                         "(`quirkscope export`) or to safetensors"),
    ("torch-save-file.pt",
     "model.pt is a pickle-based PyTorch checkpoint (or TorchScript), which runs code when loaded"),
    ("torch-save-bytes", "bundle is or contains a pickled PyTorch checkpoint ('archive/data.pkl')"),
    ("bundle-with-model.pt", "bundle member 'model.pt' is a pickle-based checkpoint, which runs code when loaded"),
    ("pickle-named-model.onnx", "model.onnx is a Python pickle, not an ONNX protobuf"),
])
def test_plain_pickle_upload_is_refused_and_never_unpickled(variant: str, message: str, tiny_bundles: dict[str, bytes],
                                                            tmp_path: Path) -> None:
    control = tmp_path / "control-ran"
    pickle.loads(pickle.dumps(WritesMarker(control)))
    assert control.exists(), "the payload should run when unpickled"
    marker = tmp_path / "payload-ran"
    source = pickle_upload_variants(marker, tiny_bundles["onnx"], tmp_path)[variant]

    with pytest.raises(UnsafeBundle) as info:
        load_bundle(source)

    assert message in info.value.message
    assert "`quirkscope export`" in info.value.message or "export with torch.onnx.export" in info.value.message
    assert not marker.exists()


def test_torchscript_archive_is_refused(tiny_bundles: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    with pytest.raises(UnsafeBundle) as info:
        load_bundle(buffer.getvalue())
    assert "is or contains a TorchScript archive" in info.value.message
    assert "runs code when loaded; export the model to ONNX (`quirkscope export`) or to safetensors" \
        in info.value.message
    inside = members_of(tiny_bundles["onnx"]) | {"model.onnx": buffer.getvalue()}
    with pytest.raises(UnsafeBundle, match="model.onnx is a TorchScript archive, not an ONNX protobuf"):
        load_bundle(zip_bytes(inside))


# --- zip tricks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("/etc/cron.d/evil", "an absolute path"),
    ("../evil.txt", "a '..' path component"),
    ("docs/../../evil.txt", "a '..' path component"),
    ("C:/Windows/evil.txt", "an absolute path"),
    ("docs\\..\\evil.txt", "a backslash in its path"),
])
def test_member_paths_escaping_the_bundle_are_refused(name: str, reason: str, tiny_bundles: dict[str, bytes]) -> None:
    data = zip_bytes(members_of(tiny_bundles["onnx"]) | {name: b"x"})
    with pytest.raises(UnsafeBundle) as info:
        load_bundle(data)
    assert info.value.message == f"bundle member '{name}' has {reason}; refused"
    assert info.value.field == "bundle"


def test_duplicate_member_names_are_refused(tiny_bundles: dict[str, bytes]) -> None:
    members = list(members_of(tiny_bundles["onnx"]).items())
    data = zip_bytes(members + [("manifest.json", b"{}")])
    with pytest.raises(UnsafeBundle, match="bundle lists member 'manifest.json' twice; refused"):
        load_bundle(data)


def test_total_uncompressed_size_limit_is_enforced_before_extracting(tiny_bundles: dict[str, bytes],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members_of(tiny_bundles["onnx"]).items():
            zf.writestr(name, data)
        zf.writestr("padding.bin.txt", b"\0" * 3_000_000)  # compresses to a few KiB
    assert len(buffer.getvalue()) < 200_000

    def no_reading(*args, **kwargs):
        raise AssertionError("a member was read before the size check")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_reading)
    with pytest.raises(BundleError) as info:
        load_bundle(buffer.getvalue(), max_uncompressed_bytes=1_000_000)
    assert info.value.message.startswith("bundle unpacks to 3")
    assert info.value.message.endswith("bytes, over the limit of 1000000 bytes")
    assert info.value.field == "bundle"


def test_directory_bundle_with_a_symlink_is_refused(tiny_bundles: dict[str, bytes], tmp_path: Path) -> None:
    for name, data in members_of(tiny_bundles["onnx"]).items():
        (tmp_path / name).write_bytes(data)
    os.symlink("/etc/hostname", tmp_path / "notes.txt")
    with pytest.raises(UnsafeBundle, match="holds a symlink 'notes.txt'; copy the file instead"):
        load_bundle(tmp_path)


# --- ONNX ---------------------------------------------------------------------------------------------------

def test_onnx_node_names_cannot_inject_code(tiny_bundles: dict[str, bytes], tmp_path: Path) -> None:
    """onnx2torch makes node names submodule names, and torch.fx pastes those unescaped into forward's source."""
    members = members_of(tiny_bundles["onnx"])

    def poisoned(marker: Path) -> onnx.ModelProto:
        model = onnx.load_from_string(members["model.onnx"])
        model.graph.node[0].name = f'x") if open("{marker}", "w") else getattr(self, "x'
        return model

    control = tmp_path / "control-ran"
    try:
        convert(poisoned(control))(torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 2, 4, 16, 16))
    except Exception:
        pass
    assert control.exists(), "the planted name should run code through plain onnx2torch"

    marker = tmp_path / "payload-ran"
    loaded = load_bundle(zip_bytes(members | {"model.onnx": poisoned(marker).SerializeToString()}))
    loaded.module(torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 2, 4, 16, 16))
    assert not marker.exists()


def test_onnx_with_external_data_is_refused(tiny_bundles: dict[str, bytes]) -> None:
    members = members_of(tiny_bundles["onnx"])
    model = onnx.load_from_string(members["model.onnx"])
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(BundleError) as info:
        load_bundle(zip_bytes(members | {"model.onnx": model.SerializeToString()}))
    assert info.value.message.startswith(f"model.onnx keeps tensor '{tensor.name}' in an external data file")
