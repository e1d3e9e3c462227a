"""Builders of hostile inputs shared by the hostile-input corpus (tests/service/test_hostile_input.py) and the
figures script (tests/benchmarks/reliability_figures.py): zips with tricks in their listing, pickles posing
as model files, tiny ONNX graphs that are wrong in one way each. Everything is built in memory."""
from __future__ import annotations

import io
import json
import pickle
import stat
import struct
import warnings
import zipfile
from typing import Any

CLASSES = ["Archery", "Bowling", "Cycling", "Diving"]
SHAPES = {"appearance": [3, 4, 16, 16], "motion": [2, 4, 16, 16]}


def manifest(name: str = "tiny-twostream", version: str = "1.0", classes: list[str] | None = None,
             fmt: str = "onnx", **changes: Any) -> dict:
    data = {"name": name, "version": version, "classes": classes or CLASSES, "format": fmt,
            "inputs": [{"name": "appearance", "modality": "rgb", "layout": "NCTHW", "shape": SHAPES["appearance"]},
                       {"name": "motion", "modality": "flow", "layout": "NCTHW", "shape": SHAPES["motion"]}]}
    if fmt == "safetensors":
        data["architecture"] = "quirkscope.tiny_twostream"
    data.update(changes)
    return data


def zip_of(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip with exactly these members, in order (duplicates allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def bundle(model_file: str = "model.onnx", model: bytes = b"onnx-bytes", extra: list[tuple[Any, bytes]] = (),
           **manifest_changes: Any) -> bytes:
    """A bundle whose model member is not parsed by the web process (its own checks are on the listing)."""
    return zip_of([("manifest.json", json.dumps(manifest(**manifest_changes)).encode()), (model_file, model),
                   *extra])


class Payload:
    """Unpickling this would run ``os.system``: stands in for any attacker's code (never unpickled here)."""

    def __reduce__(self):  # pragma: no cover - only pickled
        import os

        return (os.system, ("touch /tmp/quirkscope-pwned",))


PICKLE = pickle.dumps(Payload(), protocol=4)


def symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so that external_attr carries the file mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def with_encrypted_flag(data: bytes, name: str) -> bytes:
    """The zip with member ``name`` marked encrypted (general purpose bit 0) in both of its headers."""
    out = bytearray(data)
    for signature, flags_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = out.find(signature)
        while at != -1:
            n = struct.unpack_from("<H", out, at + name_len_at)[0]
            if bytes(out[at + name_at:at + name_at + n]) == name.encode():
                struct.pack_into("<H", out, at + flags_at, struct.unpack_from("<H", out, at + flags_at)[0] | 0x1)
            at = out.find(signature, at + 4)
    return bytes(out)


def zip_bomb_declared(total_bytes: int = 64 * 1024**3) -> bytes:
    """A small bundle whose central directory says its model member unpacks to ``total_bytes``."""
    data = bytearray(bundle(model=b"\0" * 1024))
    # patch the uncompressed size of every entry named model.onnx in the central directory (ZIP64 not needed
    # for the check: a size of 0xFFFFFFFF with a ZIP64 extra would be read the same way by zipfile)
    name = b"model.onnx"
    at = data.find(b"PK\x01\x02")
    while at != -1:
        n = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46:at + 46 + n]) == name:
            struct.pack_into("<I", data, at + 24, min(total_bytes, 0xFFFFFFFE))
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def _raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip from already deflated members ``(name, deflated, crc32, unpacked size)`` (sizes < 4 GiB each)."""
    out, central = bytearray(), bytearray()
    for name, deflated, crc, size in entries:
        raw = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(raw), 0)
        out += raw + deflated
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(deflated), size,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def zip_bomb_real(unpacked_bytes: int = 3 * 1024**3) -> bytes:
    """A real bomb: members of zeros that deflate ~1000:1 and together unpack to ``unpacked_bytes``, more than
    the bundle limit (one deflated stream, reused for every member)."""
    import zlib

    piece = 256 * 1024**2
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = packer.compress(bytes(piece)) + packer.flush()
    crc = zlib.crc32(bytes(piece))

    def deflate(data: bytes) -> tuple[bytes, int, int]:
        p = zlib.compressobj(9, zlib.DEFLATED, -15)
        return p.compress(data) + p.flush(), zlib.crc32(data), len(data)

    entries = [("manifest.json", *deflate(json.dumps(manifest()).encode())), ("model.onnx", *deflate(b"onnx-bytes"))]
    entries += [(f"padding/{i}.txt", zeros, crc, piece) for i in range(unpacked_bytes // piece)]
    return _raw_zip(entries)


def torchscript_like_zip() -> bytes:
    """What torch.jit.save writes: a zip with code/ and constants.pkl (not loaded: refused by listing)."""
    return zip_of([("archive/code/__torch__.py", b"def forward(self): pass"), ("archive/data.pkl", PICKLE),
                   ("archive/constants.pkl", PICKLE)])


# ------------------------------------------------------------------------------ tiny ONNX graphs (worker side)

def onnx_graph(*, keep_dims: bool = False, declared: dict[str, list[int]] | None = None,
               custom_op: tuple[str, str] | None = None, n_classes: int = len(CLASSES),
               nan_off_zero: bool = False, batch_of_two_only: bool = False) -> bytes:
    """A two-input ONNX model: logits = mean over (T, H, W) of appearance (3 channels, projected to
    ``n_classes`` by a MatMul) + mean of motion. ``keep_dims`` makes the output 5-D; ``declared`` changes the
    graph's input shapes; ``custom_op=(domain, op)`` inserts an operator no converter knows. ``nan_off_zero``
    adds sqrt(-mean(appearance)^2): zero on the zero inputs of the load check, NaN on any other input;
    ``batch_of_two_only`` reshapes the logits to a fixed batch of two, which passes the load check
    (a batch of two) and raises on any other batch."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    shapes = declared or SHAPES
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *shapes[n]])
              for n in ("appearance", "motion")]
    out_shape = ["batch", n_classes, 1, 1, 1] if keep_dims else ["batch", n_classes]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)
    weight = numpy_helper.from_array(np.ones((3, n_classes), dtype=np.float32), "w")
    nodes = [
        helper.make_node("ReduceMean", ["appearance"], ["app_mean"], axes=[2, 3, 4], keepdims=0),
        helper.make_node("MatMul", ["app_mean", "w"], ["app_logits"]),
        helper.make_node("ReduceMean", ["motion"], ["mot_thw"], axes=[2, 3, 4], keepdims=0),
        helper.make_node("ReduceMean", ["mot_thw"], ["mot_mean"], axes=[1], keepdims=1),
        helper.make_node("Add", ["app_logits", "mot_mean"], ["flat"]),
    ]
    inits_extra = []
    if nan_off_zero:
        nodes[4] = helper.make_node("Add", ["app_logits", "mot_mean"], ["pre"])
        nodes += [helper.make_node("ReduceMean", ["app_mean"], ["app_all"], axes=[1], keepdims=1),
                  helper.make_node("Mul", ["app_all", "app_all"], ["square"]),
                  helper.make_node("Neg", ["square"], ["negative"]),
                  helper.make_node("Sqrt", ["negative"], ["root"]),
                  helper.make_node("Add", ["pre", "root"], ["flat"])]
    if batch_of_two_only:
        nodes[4] = helper.make_node("Add", ["app_logits", "mot_mean"], ["pre"])
        nodes.append(helper.make_node("Reshape", ["pre", "fixed"], ["flat"]))
        inits_extra.append(numpy_helper.from_array(np.array([2, n_classes], dtype=np.int64), "fixed"))
    if keep_dims:
        nodes.append(helper.make_node("Unsqueeze", ["flat", "axes"], ["logits"]))
        axes = numpy_helper.from_array(np.array([2, 3, 4], dtype=np.int64), "axes")
        inits = [weight, axes]
    else:
        nodes.append(helper.make_node("Identity", ["flat"], ["logits"]))
        inits = [weight]
    opsets = [helper.make_opsetid("", 17)]
    if custom_op:
        domain, op = custom_op
        nodes[4] = helper.make_node(op, ["app_logits", "mot_mean"], ["flat"], domain=domain)
        if domain:
            opsets.append(helper.make_opsetid(domain, 1))
    graph = helper.make_graph(nodes, "hostile", inputs, [output], initializer=inits + inits_extra)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()
