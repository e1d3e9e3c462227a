"""The tiny reference nets. ``TinyTwoStream``: an appearance tower (RGB clip) and a motion tower (flow clip), fused
by a 3D convolution, then a classifier head that either keeps spatial positions (``head="flatten"``) or pools
them away (``head="gap"``). ``TinyC3D``: a single-stream net on the RGB clip alone (mixed 3D/2D convolutions in the
manner of torchvision's mc3, a few channels wide) with a position-keeping head. Both train on a CPU in under a
minute."""
from __future__ import annotations

import torch
from torch import nn


def _tower(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, width, kernel_size=3, stride=(1, 2, 2), padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(width, 2 * width, kernel_size=3, stride=(1, 2, 2), padding=1),
        nn.ReLU(inplace=True),
    )


class TinyTwoStream(nn.Module):
    """forward(appearance (N,3,T,H,W), motion (N,2,T,H,W)) -> logits (N, num_classes).

    H and W must be divisible by 4. The penultimate features are the input of ``head[-1]`` (a Linear).
    """

    def __init__(self, num_classes: int = 8, frames: int = 8, size: int = 32, width: int = 8,
                 hidden: int = 64, head: str = "flatten") -> None:
        super().__init__()
        if head not in ("flatten", "gap"):
            raise ValueError(f"head must be 'flatten' or 'gap', got {head!r}")
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size}")
        self.appearance = _tower(3, width)
        self.motion = _tower(2, width)
        self.fusion = nn.Sequential(
            nn.Conv3d(4 * width, 4 * width, kernel_size=3, stride=(2, 1, 1), padding=1),
            nn.ReLU(inplace=True),
        )
        fused = size // 4
        if head == "flatten":
            pooled = nn.AdaptiveAvgPool3d((1, fused, fused))
            features = 4 * width * fused * fused
        else:
            pooled = nn.AdaptiveAvgPool3d(1)
            features = 4 * width
        self.head = nn.Sequential(
            pooled, nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.appearance(appearance), self.motion(motion)], dim=1)
        return self.head(self.fusion(fused))


class TinyC3D(nn.Module):
    """forward(clip (N,3,T,H,W)) -> logits (N, num_classes): one RGB stream, no flow.

    mc3-style: two full 3D convolutions (time and space, each halving H and W) read motion from the RGB frames,
    then a spatial-only (1x3x3) convolution; the head averages over time and keeps the (H/4, W/4) positions, like
    ``TinyTwoStream(head="flatten")``. H and W must be divisible by 4. The penultimate features are the input of
    ``head[-1]`` (a Linear).
    """

    def __init__(self, num_classes: int = 8, frames: int = 8, size: int = 32, width: int = 8,
                 hidden: int = 64) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size}")
        self.features = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(width, 2 * width, kernel_size=3, stride=(2, 2, 2), padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(2 * width, 2 * width, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.ReLU(inplace=True),
        )
        fused = size // 4
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool3d((1, fused, fused)), nn.Flatten(),
            nn.Linear(2 * width * fused * fused, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clip))
