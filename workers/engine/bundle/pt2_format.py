"""The ``torch.export`` bundle format: ``model.pt2`` read by ``torch.export.load`` only after ``pt2_guard``
has vetted it (unless the project is marked trusted), and written by ``torch.export.save`` with a dynamic
batch axis."""
from __future__ import annotations

import io
import math
import operator
import warnings

import torch
from torch import nn
from torch.export import Dim

from workers.engine.bundle.checks import example_inputs
from workers.engine.bundle.pt2_guard import DENIED_ATEN_OPS, MODEL_FILE, check_pt2_archive
from workers.engine.errors import BundleError, ModelLoadError, UnsafeBundle
from workers.engine.manifest import Manifest

_REEXPORT_HINT = (
    "re-export with a dynamic batch axis (torch.export.export(..., dynamic_shapes=({0: Dim('batch')}, ...))) "
    "or with `quirkscope export --format torch.export`"
)


class ExportedProgramModule(nn.Module):
    """``ExportedProgram.module()`` behind an ``nn.Module`` whose ``train()``/``eval()`` work: the exported graph
    has its dropout/batch-norm mode baked in, and its own ``eval()`` raises, so this only sets the flags."""

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.program = graph_module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.program(*inputs)

    def train(self, mode: bool = True) -> "ExportedProgramModule":
        for module in self.modules():
            module.training = mode
        return self


def _user_input_placeholders(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    user_inputs = set(ep.graph_signature.user_inputs)
    return [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user_inputs]


_ALLOWED_CALLS = (
    operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
    operator.neg, operator.pow, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    operator.and_, operator.or_, operator.not_, torch.sym_float, torch.sym_int, torch.sym_max, torch.sym_min,
    torch.sym_not, torch.sym_sqrt, torch.sym_ite, math.floor, math.ceil, math.trunc, math.sqrt,
)


def _allowed_call(target: object) -> bool:
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace == "aten" and target._opname not in DENIED_ATEN_OPS
    return any(target is fn for fn in _ALLOWED_CALLS)


def _check_operators(ep: torch.export.ExportedProgram) -> None:
    """The loaded graph calls ATen operators (and shape arithmetic) only: no modules, no other callables."""
    for node in ep.graph.nodes:
        if node.op == "call_module" or (node.op == "call_function" and not _allowed_call(node.target)):
            raise UnsafeBundle(f"{MODEL_FILE} calls {node.target!r}; only ATen operators are allowed", field=MODEL_FILE)


def _check_signature(ep: torch.export.ExportedProgram, manifest: Manifest) -> None:
    """Exported in eval mode, with one dynamic-batch input per manifest input."""
    for node in ep.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            schema_args = node.target._schema.arguments
            values = dict(zip((a.name for a in schema_args), node.args)) | dict(node.kwargs)
            if values.get("training") is True or values.get("train") is True:
                raise ModelLoadError(
                    f"{MODEL_FILE} was exported in training mode ({node.target} runs with training=True); "
                    "call model.eval() before torch.export.export",
                    field=MODEL_FILE,
                )
    placeholders = _user_input_placeholders(ep)
    if len(placeholders) != len(manifest.inputs):
        raise ModelLoadError(
            f"{MODEL_FILE} takes {len(placeholders)} inputs but the manifest declares {len(manifest.inputs)} "
            f"({', '.join(s.name for s in manifest.inputs)})",
            field="manifest.inputs",
        )
    for node, spec in zip(placeholders, manifest.inputs):
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and value.ndim > 0 and isinstance(value.shape[0], int):
            raise ModelLoadError(
                f"{MODEL_FILE} has a static batch axis (size {value.shape[0]}) on input '{spec.name}'; "
                + _REEXPORT_HINT,
                field=MODEL_FILE,
            )


def load_pt2(data: bytes, manifest: Manifest, *, trusted: bool, max_uncompressed_bytes: int) -> nn.Module:
    """``model.pt2`` bytes -> ``ExportedProgramModule``; vetted by ``check_pt2_archive`` unless ``trusted``."""
    if not trusted:
        check_pt2_archive(data, max_uncompressed_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(io.BytesIO(data))
    except (UnsafeBundle, BundleError):
        raise
    except Exception as exc:
        raise BundleError(f"{MODEL_FILE} could not be read by torch.export.load: {exc}", field=MODEL_FILE) from exc
    if not trusted:
        _check_operators(ep)
    _check_signature(ep, manifest)
    # check_guards=False: the default would exec the archive's guards_code (Python source) on the first call.
    return ExportedProgramModule(ep.module(check_guards=False))


def export_pt2(module: nn.Module, manifest: Manifest) -> bytes:
    """``model.pt2`` bytes: ``torch.export.export`` with the batch axis dynamic on every input."""
    batch = Dim("batch", min=1)
    inputs = example_inputs(manifest, 2, random=True)
    try:
        ep = torch.export.export(module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    except Exception as exc:
        raise ModelLoadError(f"the model could not be exported with torch.export: {exc}", field=MODEL_FILE) from exc
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    return buffer.getvalue()
