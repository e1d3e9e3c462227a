"""Explicit zero pads before convolutions (TensorFlow-style "same" padding) are folded into the convolution when an
ONNX bundle is loaded, and only where that is exact: symmetric, zero-valued, constant pads feeding one unpadded
convolution."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import fx, nn

from workers.engine.bundle import load_bundle, write_bundle
from workers.engine.bundle.graph_passes import (
    _symmetric_padding,
    fold_constant_pads,
    onnx_to_torch_pads,
)
from workers.engine.manifest import parse_manifest


class SamePadded(nn.Module):
    """Symmetric zero pads (folded), an asymmetric stride-2 one and a non-zero one (both kept), 2-D and 3-D."""

    def __init__(self) -> None:
        super().__init__()
        self.pad_sym = nn.ZeroPad2d(1)
        self.conv_sym = nn.Conv2d(3, 4, 3)
        self.pad_asym = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv_asym = nn.Conv2d(4, 4, 3, stride=2)
        self.pad_value = nn.ConstantPad2d(1, 0.5)
        self.conv_value = nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_sym(self.pad_sym(x)))
        x = torch.relu(self.conv_asym(self.pad_asym(x)))
        x = self.conv_value(self.pad_value(x))
        return self.head(x.mean(dim=(2, 3)))


def _manifest() -> object:
    return parse_manifest({
        "name": "same", "version": "1", "classes": ["a", "b", "c"], "format": "onnx",
        "inputs": [{"name": "image", "modality": "rgb", "layout": "NCHW", "shape": [3, 16, 16]}],
    })


def _pads_and_paddings(module: nn.Module) -> tuple[int, list[tuple[int, ...]]]:
    pads = sum(type(m).__name__.startswith("OnnxPad") for m in module.modules())
    return pads, [m.padding for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_loading_an_onnx_bundle_folds_only_the_symmetric_zero_pad_and_keeps_the_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SamePadded().eval()
    path = write_bundle(model, _manifest(), tmp_path / "same.zip")  # verifies logits within 1e-4 itself
    loaded = load_bundle(path).module
    pads, paddings = _pads_and_paddings(loaded)
    assert pads == 2
    assert paddings == [(1, 1), (0, 0), (0, 0)]
    x = torch.randn(5, 3, 16, 16, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    out, ref = loaded(x), model(ref_x)
    assert torch.allclose(out, ref, atol=1e-5)
    out[:, 1].sum().backward()
    ref[:, 1].sum().backward()
    assert torch.allclose(x.grad, ref_x.grad, atol=1e-5)


def test_a_pad_whose_amount_depends_on_the_input_is_left_alone() -> None:
    from onnx2torch.node_converters.pad import OnnxPadDynamic

    root = nn.Module()
    root.pad = OnnxPadDynamic()
    root.conv = nn.Conv2d(1, 1, 3)
    graph = fx.Graph()
    x, pads = graph.placeholder("x"), graph.placeholder("pads")
    graph.output(graph.call_module("conv", (graph.call_module("pad", (x, pads)),)))
    gm = fx.GraphModule(root, graph)
    assert fold_constant_pads(gm) == 0
    assert gm.conv.padding == (0, 0)
    assert any(n.target == "pad" for n in gm.graph.nodes)


@pytest.mark.parametrize(("torch_pads", "dims", "expected"), [
    ([1, 1, 2, 2], 2, (2, 1)),          # last axis first in torch's order; conv padding is first axis first
    ([1, 1, 1, 1, 0, 0, 0, 0], 2, (1, 1)),
    ([0, 1, 0, 1], 2, None),            # asymmetric
    ([1, 1, 1, 1, 0, 0, 1, 1], 2, None),  # pads the batch axis
    ([1, 1, 1, 1, 1, 1], 3, (1, 1, 1)),
    ([1, 1], 2, None),                  # fewer axes than the convolution has
])
def test_symmetric_padding(torch_pads: list[int], dims: int, expected: tuple[int, ...] | None) -> None:
    assert _symmetric_padding(torch_pads, dims) == expected


def test_onnx_to_torch_pads_reverses_the_axes_and_pairs_begin_with_end() -> None:
    # N, C, H, W: begins (0, 0, 1, 2), ends (0, 0, 3, 4) -> W (2, 4), H (1, 3), C, N
    assert onnx_to_torch_pads([0, 0, 1, 2, 0, 0, 3, 4]) == [2, 4, 1, 3, 0, 0, 0, 0]

