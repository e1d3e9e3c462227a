"""Exact speed-ups of the fx graph onnx2torch builds from an ONNX bundle, applied when the bundle loads: every
optimisation step runs the model forward and backward, so what the graph does needlessly is paid thousands of times.

``fold_constant_pads``: models written with TensorFlow-style "same" padding (EfficientNet's
``Conv2dStaticSamePadding``, Keras ports) export to ONNX as a ``Pad`` before each ``Conv`` whose own padding is 0.
onnx2torch keeps them apart, so every step allocates, fills and copies a padded copy of each such activation, and
copies the gradient back out of it: on EfficientNet-Lite0 that was about a quarter of a forward-and-backward on the
CPU (profile in docs/real_model_quality.md). A zero pad that is the same on both sides of every spatial axis, and
that feeds one convolution with zero padding of its own, is exactly that convolution with ``padding`` set, so the
pad node is removed and the convolution's ``padding`` set instead. Asymmetric pads (stride-2 "same" padding) are
left as they are. The pads must be constant: read from the module (``OnnxPadStatic``) or computed by a subgraph of
the graph's constants alone (``OnnxPadDynamic`` fed by ``Constant``/``Concat``/``Reshape``/... nodes); anything
that depends on a graph input is left alone.
"""
from __future__ import annotations

from typing import Any

import torch
from onnx2torch.node_converters.pad import OnnxPadDynamic, OnnxPadStatic
from torch import fx, nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _constant_value(gm: fx.GraphModule, node: Any, memo: dict[fx.Node, Any]) -> Any:
    """The value of ``node`` when it is computed from constants alone (no placeholder among its ancestors);
    raises LookupError otherwise. Plain Python values are returned as they are."""
    if not isinstance(node, fx.Node):
        if isinstance(node, (list, tuple)):
            return type(node)(_constant_value(gm, a, memo) for a in node)
        return node
    if node in memo:
        return memo[node]
    if node.op == "placeholder":
        raise LookupError(node.name)
    args = [_constant_value(gm, a, memo) for a in node.args]
    kwargs = {k: _constant_value(gm, v, memo) for k, v in node.kwargs.items()}
    with torch.no_grad():
        if node.op == "get_attr":
            value = gm.get_parameter(node.target) if "." in str(node.target) else getattr(gm, str(node.target))
        elif node.op == "call_module":
            value = gm.get_submodule(str(node.target))(*args, **kwargs)
        elif node.op == "call_function":
            value = node.target(*args, **kwargs)
        elif node.op == "call_method":
            value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            raise LookupError(node.name)
    memo[node] = value
    return value


def onnx_to_torch_pads(pads: list[int]) -> list[int]:
    """ONNX's order [x1_begin, x2_begin, ..., x1_end, x2_end, ...] -> torch's [xn_begin, xn_end, ..., x1_begin,
    x1_end] (what ``OnnxPadDynamic`` does before ``F.pad``). Pure."""
    half = len(pads) // 2
    return [p for begin, end in zip(reversed(pads[:half]), reversed(pads[half:])) for p in (begin, end)]


def _torch_pads(gm: fx.GraphModule, node: fx.Node, memo: dict[fx.Node, Any]) -> tuple[list[int], float] | None:
    """(pads in torch's order, fill value) of a constant-mode pad node whose pads are constants; None otherwise."""
    module = gm.get_submodule(str(node.target))
    if getattr(module, "mode", None) != "constant":
        return None
    try:
        if isinstance(module, OnnxPadStatic) and len(node.args) == 1:
            return [int(p) for p in module.pads], float(module.constant_value)
        if isinstance(module, OnnxPadDynamic) and 2 <= len(node.args) <= 3 and not node.kwargs:
            pads = _constant_value(gm, node.args[1], memo)
            value = _constant_value(gm, node.args[2], memo) if len(node.args) == 3 else None
            fill = 0.0 if value is None else float(torch.as_tensor(value).reshape(-1)[0])
            return onnx_to_torch_pads([int(p) for p in torch.as_tensor(pads).reshape(-1).tolist()]), fill
    except (LookupError, IndexError, RuntimeError, TypeError, ValueError):
        return None
    return None


def _symmetric_padding(torch_pads: list[int], spatial_dims: int) -> tuple[int, ...] | None:
    """Torch-order pads (last axis first, (begin, end) pairs) -> the conv ``padding`` (first spatial axis first)
    when every spatial axis is padded the same on both sides, by >= 0, and no other axis is padded."""
    pairs = [tuple(torch_pads[i:i + 2]) for i in range(0, len(torch_pads), 2)]
    spatial, rest = pairs[:spatial_dims], pairs[spatial_dims:]
    if len(spatial) != spatial_dims or any(p != (0, 0) for p in rest):
        return None
    if any(begin != end or begin < 0 for begin, end in spatial):
        return None
    return tuple(begin for begin, _ in reversed(spatial))


def fold_constant_pads(gm: fx.GraphModule) -> int:
    """Fold every symmetric constant zero pad that feeds exactly one unpadded convolution into it, in place.
    Returns how many were folded. The module's outputs are unchanged up to the order of float additions."""
    memo: dict[fx.Node, Any] = {}
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        if not isinstance(gm.get_submodule(str(node.target)), (OnnxPadStatic, OnnxPadDynamic)):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            continue
        conv = gm.get_submodule(str(users[0].target))
        if not isinstance(conv, _CONVS) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        if any(conv.padding):
            continue
        found = _torch_pads(gm, node, memo)
        if found is None or found[1] != 0.0:
            continue
        padding = _symmetric_padding(found[0], spatial_dims=conv.weight.dim() - 2)
        if padding is None or not any(padding):
            continue
        conv.padding = padding
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return folded

