"""Robustness transforms applied at every optimisation step: random spatial and temporal shifts (jitter), and
random scaling and small rotations about the frame centre (flow vectors turned and scaled with their field).

Draws are independent per row of the batch (Lucent and Lucid share one draw across the batch) and shared by the
streams of a row, so that a two-stream model still sees its appearance and motion aligned. The draws of a row
come from that row's own seed, so a row's result does not depend on which other rows share its batch.
"""
from __future__ import annotations

from typing import Sequence

import torch


def draw_jitter_table(seed: int, steps: int, max_px: int, max_frames: int) -> torch.Tensor:
    """(steps, 3) int64 table of (dt, dy, dx) shifts for one row: dt in [-max_frames, max_frames], dy and dx in
    [-max_px, max_px], drawn from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
    dt = torch.randint(-max_frames, max_frames + 1, (steps, 1), generator=gen)
    dyx = torch.randint(-max_px, max_px + 1, (steps, 2), generator=gen)
    return torch.cat([dt, dyx], dim=1)


def roll_rows(x: torch.Tensor, shifts: torch.Tensor, moved: Sequence[bool] | None = None) -> torch.Tensor:
    """Circularly shift each row of x (N,C,T,H,W) by its own (dt, dy, dx) from ``shifts`` (N, 3); differentiable.

    out[n, c, t, y, x] = x[n, c, (t - dt) mod T, (y - dy) mod H, (x - dx) mod W]. ``moved`` (3 bools: whether any
    row shifts along t, y, x), when given, saves reading that from ``shifts``: on a GPU such a read waits for every
    kernel queued before it."""
    n, c, t, h, w = x.shape
    dev = x.device
    shifts = shifts.to(dev)
    out = x
    for dim, size, col in ((2, t, 0), (3, h, 1), (4, w, 2)):
        if size == 1 or not (moved[col] if moved is not None else bool(shifts[:, col].any())):
            continue
        idx = (torch.arange(size, device=dev).view(1, size) - shifts[:, col].view(n, 1)) % size  # (N, size)
        view = [n, 1, 1, 1, 1]
        view[dim] = size
        idx = idx.view(view).expand_as(out)
        out = torch.gather(out, dim, idx)
    return out


def draw_affine_table(seed: int, steps: int, max_scale: float, max_degrees: float) -> torch.Tensor:
    """(steps, 2) float table of (scale, angle in degrees) for one row: scale uniform in [1 - max_scale,
    1 + max_scale], angle uniform in [-max_degrees, max_degrees] (Lucent's ``random_scale`` and ``random_rotate``
    ranges are 0.9-1.1 and +-10 degrees), from a generator seeded with ``seed`` (apart from the jitter's)."""
    gen = torch.Generator().manual_seed(int(seed) + 0xAFF1)
    draws = torch.rand(steps, 2, generator=gen, dtype=torch.float64) * 2 - 1
    return torch.stack([1 + max_scale * draws[:, 0], max_degrees * draws[:, 1]], dim=1).float()


def affine_matrices(scale: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """(N,) scales and angles -> (N, 2, 2) forward maps A = s R(angle) in pixel coordinates (x right, y down):
    content at offset p from the centre moves to A p."""
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return scale.view(-1, 1, 1) * rot


def is_identity(matrices: torch.Tensor) -> bool:
    """Whether every (2, 2) matrix of ``matrices`` is the identity (reads the tensor: keep it on the host)."""
    return bool((matrices == torch.eye(2, device=matrices.device)).all())


def affine_rows(x: torch.Tensor, matrices: torch.Tensor, *, vectors: bool = False,
                identity: bool | None = None) -> torch.Tensor:
    """Scale and rotate each row of x (N,C,T,H,W) about the frame centre by its own A (N, 2, 2), the same for all
    frames and channels of the row; bilinear, differentiable, zero (the neutral value) outside the frame.

    With ``vectors`` the C = 2 channels are (x, y) displacement fields and are mapped too: out(A p) = A x(p).
    ``identity`` (``is_identity`` of the matrices, found on the host), when given, saves reading the matrices."""
    n, c, t, h, w = x.shape
    if identity if identity is not None else is_identity(matrices):
        return x
    a = matrices.to(device=x.device, dtype=x.dtype)
    # affine_grid samples input at theta @ output, in coordinates normalised by the half sides: D^-1 A^-1 D.
    # inv_ex, not inv: inv's error check reads the result, which on a GPU waits for every kernel queued before it;
    # A = s R is never singular (s >= 0.5)
    half = torch.stack([x.new_full((), w / 2), x.new_full((), h / 2)])  # filled there: no copy from the host
    theta_lin = torch.linalg.inv_ex(a).inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
    theta = torch.cat([theta_lin, torch.zeros(n, 2, 1, device=x.device, dtype=x.dtype)], dim=2)
    grid = torch.nn.functional.affine_grid(theta, [n, c * t, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(x.reshape(n, c * t, h, w), grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=False).view(n, c, t, h, w)
    if vectors:
        out = torch.einsum("nij,njthw->nithw", a, out)
    return out
