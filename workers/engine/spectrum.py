"""How natural an image's frequency content is: its radially averaged power spectrum and the log-log slope of it.

Natural images have a power spectrum that falls about as 1/f^2 (slope -2; van der Schaaf & van Hateren 1996);
white noise is flat (slope 0), and the grey high-frequency texture of an unregularised activation maximisation sits
in between. Each image is mean-subtracted and multiplied by a 2-D Hann window first, so the jump at the borders of a
non-periodic image does not add a 1/f^2 component of its own.
"""
from __future__ import annotations

import torch

MIN_RADIUS = 2  # the lowest radius bins carry the window's main lobe; the fit starts here (in 1/size units)


def radial_power_spectrum(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """images (..., H, W) -> (radii (R,), power (..., R)): the mean of |FFT|^2 of the windowed, mean-subtracted
    image over rings of integer radius r = 1 .. min(H, W) // 2, radius in units of 1 / min(H, W) cycles per pixel."""
    x = images.double()
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype),
                         torch.hann_window(w, periodic=False, dtype=x.dtype))
    power = torch.fft.fft2(x * window).abs().square()
    fy = torch.fft.fftfreq(h, dtype=x.dtype).view(-1, 1)
    fx = torch.fft.fftfreq(w, dtype=x.dtype).view(1, -1)
    ring = torch.round(torch.sqrt(fy * fy + fx * fx) * min(h, w)).long().flatten()   # (H*W,)
    rmax = min(h, w) // 2
    flat = power.flatten(-2)                                                         # (..., H*W)
    keep = (ring >= 1) & (ring <= rmax)
    sums = torch.zeros(*flat.shape[:-1], rmax + 1, dtype=x.dtype).index_add_(-1, ring[keep], flat[..., keep])
    counts = torch.zeros(rmax + 1, dtype=x.dtype).index_add_(0, ring[keep], torch.ones_like(ring[keep], dtype=x.dtype))
    radii = torch.arange(1, rmax + 1)
    return radii, (sums[..., 1:] / counts[1:])


def spectrum_slope(images: torch.Tensor) -> torch.Tensor:
    """images (..., H, W) -> (...): least-squares slope of log power against log radius over radii
    ``MIN_RADIUS`` .. min(H, W) // 2 (about -2 for natural images, 0 for white noise)."""
    radii, power = radial_power_spectrum(images)
    use = radii >= MIN_RADIUS
    lx = torch.log(radii[use].double())
    ly = torch.log(power[..., use].clamp_min(1e-300))
    lx = lx - lx.mean()
    return ((ly - ly.mean(dim=-1, keepdim=True)) * lx).sum(dim=-1) / lx.square().sum()
