"""Robustness transforms applied at every optimisation step: random spatial and temporal shifts (jitter).

Draws are independent per row of the batch (Lucent and Lucid share one draw across the batch) and shared by the
streams of a row, so that a two-stream model still sees its appearance and motion aligned. The draws of a row
come from that row's own seed, so a row's result does not depend on which other rows share its batch.
"""
from __future__ import annotations

import torch


def draw_jitter_table(seed: int, steps: int, max_px: int, max_frames: int) -> torch.Tensor:
    """(steps, 3) int64 table of (dt, dy, dx) shifts for one row: dt in [-max_frames, max_frames], dy and dx in
    [-max_px, max_px], drawn from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
    dt = torch.randint(-max_frames, max_frames + 1, (steps, 1), generator=gen)
    dyx = torch.randint(-max_px, max_px + 1, (steps, 2), generator=gen)
    return torch.cat([dt, dyx], dim=1)


def roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each row of x (N,C,T,H,W) by its own (dt, dy, dx) from ``shifts`` (N, 3); differentiable.

    out[n, c, t, y, x] = x[n, c, (t - dt) mod T, (y - dy) mod H, (x - dx) mod W]."""
    n, c, t, h, w = x.shape
    dev = x.device
    shifts = shifts.to(dev)
    out = x
    for dim, size, col in ((2, t, 0), (3, h, 1), (4, w, 2)):
        if size == 1 or not bool(shifts[:, col].any()):
            continue
        idx = (torch.arange(size, device=dev).view(1, size) - shifts[:, col].view(n, 1)) % size  # (N, size)
        view = [n, 1, 1, 1, 1]
        view[dim] = size
        idx = idx.view(view).expand_as(out)
        out = torch.gather(out, dim, idx)
    return out
