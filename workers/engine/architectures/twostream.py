"""The project's own nets as registry entries: ``quirkscope.twostream_vgg16`` (two VGG-16 towers with conv5 fusion,
Feichtenhofer et al. 2016), ``quirkscope.tiny_twostream`` (the reference net) and ``quirkscope.tiny_c3d`` (the
single-stream RGB net of the planted-shortcut cases, workers/engine/reference/cases.py)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from workers.engine.architectures.registry import register_architecture
from workers.engine.reference.model import TinyC3D, TinyTwoStream


def _vgg16_conv_tower(in_channels: int) -> nn.Sequential:
    """torchvision's VGG-16 ``features`` up to and including conv5_3 + ReLU (pool5 dropped), taking
    ``in_channels`` instead of 3."""
    layers = list(make_layers(cfgs["D"], batch_norm=False))[:-1]
    if in_channels != 3:
        layers[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
    return nn.Sequential(*layers)


class TwoStreamVGG16(nn.Module):
    """forward(appearance (N,3,H,W), motion (N,2L,H,W)) -> logits (N, num_classes).

    Two VGG-16 conv towers; their conv5_3 outputs are concatenated (1024 channels) and fused by a
    ``fusion_kernel`` x ``fusion_kernel`` convolution to 512 channels + ReLU; then pool5, and the VGG head
    fc6-fc7-fc8 (4096-4096-num_classes) with dropout. ``motion`` stacks L = ``flow_frames`` (x, y) flow frames
    in channels. H and W must be at least 32. The penultimate features are the input of ``head[-1]``.
    """

    def __init__(self, num_classes: int = 101, flow_frames: int = 10, fusion_kernel: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if fusion_kernel not in (1, 3):
            raise ValueError(f"fusion_kernel must be 1 or 3, got {fusion_kernel}")
        if flow_frames < 1:
            raise ValueError(f"flow_frames must be at least 1, got {flow_frames}")
        self.flow_frames = flow_frames
        self.appearance = _vgg16_conv_tower(3)
        self.motion = _vgg16_conv_tower(2 * flow_frames)
        self.fusion = nn.Sequential(
            nn.Conv2d(1024, 512, kernel_size=fusion_kernel, padding=fusion_kernel // 2),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2), nn.AdaptiveAvgPool2d((7, 7)))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's VGG initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.appearance(appearance), self.motion(motion)], dim=1)
        return self.head(self.pool(self.fusion(fused)))


@register_architecture("quirkscope.twostream_vgg16")
def build_twostream_vgg16(num_classes: int, flow_frames: int = 10, fusion_kernel: int = 3,
                          dropout: float = 0.5) -> nn.Module:
    """Two-stream VGG-16 with conv5 fusion; see ``TwoStreamVGG16``."""
    return TwoStreamVGG16(num_classes=num_classes, flow_frames=flow_frames, fusion_kernel=fusion_kernel,
                          dropout=dropout)


@register_architecture("quirkscope.tiny_twostream")
def build_tiny_twostream(num_classes: int, **kwargs: object) -> nn.Module:
    """The reference ``TinyTwoStream`` (kwargs: frames, size, width, hidden, head)."""
    return TinyTwoStream(num_classes=num_classes, **kwargs)


@register_architecture("quirkscope.tiny_c3d")
def build_tiny_c3d(num_classes: int, **kwargs: object) -> nn.Module:
    """The single-stream ``TinyC3D`` (kwargs: frames, size, width, hidden)."""
    return TinyC3D(num_classes=num_classes, **kwargs)
