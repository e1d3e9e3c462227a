"""The ``onnx`` bundle format: ``model.onnx`` converted to a differentiable ``nn.Module`` with onnx2torch, and
its export with a dynamic batch axis on every input and output."""
from __future__ import annotations

import io
import re
import warnings

import onnx
import torch
from google.protobuf.message import DecodeError
from onnx2torch import convert
from torch import fx, nn

from workers.engine.bundle.archive import MODEL_FILES, pickle_kind
from workers.engine.bundle.checks import example_inputs
from workers.engine.bundle.graph_passes import fold_constant_pads
from workers.engine.errors import BundleError, ModelLoadError, UnsafeBundle
from workers.engine.manifest import Manifest

MODEL_FILE = MODEL_FILES["onnx"]
OPSET = 17
"""The newest opset whose every operator onnx2torch 1.5 converts (opset 18 changes ReduceMean, Pad, ...)."""
OUTPUT_NAME = "logits"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_./:\-]")
_REEXPORT_HINT = (
    "re-export with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={name: {0: 'batch'}, ...} for "
    "every input and output) or with `quirkscope export`"
)


def _parse(data: bytes) -> onnx.ModelProto:
    kind = pickle_kind(data)
    if kind:
        raise UnsafeBundle(
            f"{MODEL_FILE} is {kind}, not an ONNX protobuf; "
            "export with torch.onnx.export or `quirkscope export`",
            field=MODEL_FILE,
        )
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{MODEL_FILE} is not a valid ONNX model: {exc}", field=MODEL_FILE) from exc
    if not model.graph.node:
        raise BundleError(f"{MODEL_FILE} is not a valid ONNX model: its graph has no nodes", field=MODEL_FILE)
    return model


def _refuse_external_data(model: onnx.ModelProto) -> None:
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise BundleError(
                f"{MODEL_FILE} keeps tensor '{tensor.name}' in an external data file; export with the weights "
                "inside the model (smaller than 2 GiB) or use the safetensors format",
                field=MODEL_FILE,
            )


def _sanitise_node_names(model: onnx.ModelProto) -> None:
    """onnx2torch turns node names into submodule names, which torch.fx pastes unescaped into the Python source
    of ``forward``: a name holding quotes or brackets would run code. Keep only path-like characters."""
    for node in model.graph.node:
        node.name = "".join(c if _SAFE_NAME.fullmatch(c) else "_" for c in node.name)


def _inline_initializer_identities(model: onnx.ModelProto) -> None:
    """The TorchScript exporter shares identical initializers through ``Identity`` nodes (e.g. the all-zero
    biases of freshly folded batch norms); onnx2torch needs a Conv's weight and bias to be initializers, so
    give each such ``Identity`` output its own copy of the tensor."""
    initializers = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1
                and len(node.output) == 1 and node.input[0] in initializers):
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            kept.append(node)
    if len(kept) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _check_signature(model: onnx.ModelProto, manifest: Manifest) -> None:
    inputs = _graph_inputs(model)
    if len(inputs) != len(manifest.inputs):
        raise ModelLoadError(
            f"{MODEL_FILE} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}) but the manifest "
            f"declares {len(manifest.inputs)} ({', '.join(s.name for s in manifest.inputs)})",
            field="manifest.inputs",
        )
    for value, spec in zip(inputs, manifest.inputs):
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        batch = dims[0]
        if batch.HasField("dim_value") and not batch.dim_param:
            raise ModelLoadError(
                f"{MODEL_FILE} has a static batch axis (size {batch.dim_value}) on input '{value.name}'; "
                + _REEXPORT_HINT,
                field=MODEL_FILE,
            )
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if len(declared) != len(spec.shape) or any(d is not None and d != s for d, s in zip(declared, spec.shape)):
            shown = ["N"] + ["?" if d is None else str(d) for d in declared]
            raise ModelLoadError(
                f"{MODEL_FILE} input '{value.name}' has shape [{', '.join(shown)}] but the manifest declares "
                f"'{spec.name}' as {spec.shape} (without the batch axis)",
                field="manifest.inputs",
            )


def load_onnx(data: bytes, manifest: Manifest) -> nn.Module:
    """``model.onnx`` bytes -> a differentiable ``nn.Module`` (an fx GraphModule built by onnx2torch)."""
    model = _parse(data)
    _refuse_external_data(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"{MODEL_FILE} is not a valid ONNX model: {first}", field=MODEL_FILE) from exc
    _check_signature(model, manifest)
    _sanitise_node_names(model)
    _inline_initializer_identities(model)
    try:
        module = convert(model)
    except NotImplementedError as exc:
        raise ModelLoadError(
            f"{MODEL_FILE} uses an operator onnx2torch cannot convert ({exc}); re-export with opset {OPSET} "
            "(`quirkscope export` does)",
            field=MODEL_FILE,
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"{MODEL_FILE} could not be converted to PyTorch: {exc}", field=MODEL_FILE) from exc
    _check_generated_names(module)
    if isinstance(module, fx.GraphModule):
        fold_constant_pads(module)
    return module


def _check_generated_names(module: nn.Module) -> None:
    """Belt and braces for ``_sanitise_node_names``: before anything runs ``forward``, every name torch.fx pasted
    into generated source must be path-like."""
    for sub in module.modules():
        if not isinstance(sub, fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            if node.op in ("call_module", "get_attr") and not all(_SAFE_NAME.fullmatch(c) for c in str(node.target)):
                raise UnsafeBundle(f"{MODEL_FILE} produced an unsafe module name {node.target!r}", field=MODEL_FILE)


def export_onnx(module: nn.Module, manifest: Manifest) -> bytes:
    """``model.onnx`` bytes with the batch axis dynamic on every input and on the logits.

    Uses the TorchScript-based exporter (``dynamo=False``) at opset 17: in torch 2.14 the dynamo exporter emits
    opset-18 operators onnx2torch cannot convert and fails on non-global adaptive pooling.
    """
    names = [spec.name for spec in manifest.inputs]
    dynamic_axes = {name: {0: "batch"} for name in names} | {OUTPUT_NAME: {0: "batch"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, example_inputs(manifest, 2, random=True), buffer, dynamo=False, opset_version=OPSET,
                input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelLoadError(
                f"the model could not be exported to ONNX ({first}); try the torch.export or safetensors format",
                field=MODEL_FILE,
            ) from exc
    return buffer.getvalue()
