"""How the optimiser represents each stream: the variables Adam updates and the map from them to the stream's
unit-space canonical tensor (N, C, T, H, W) that the model, the objectives and the regularisers see.

- ``pixel``: the variables are the unit-space tensor itself (Feichtenhofer et al.; paper-faithful).
- ``fourier``: the variables are, per frame, the 2-D real FFT of the image over (H, W), scaled by 1/f^decay
  (Olah et al. 2017, Lucid's ``fft_image``), so an equal step on every coefficient is a step with a natural
  image's falloff; time stays an ordinary axis, so the temporal regulariser acts on frames as before. RGB adds
  Lucid's colour decorrelation (a 3x3 square root of ImageNet's colour covariance) and a sigmoid to valid pixels
  in (0, 1); flow (2 channels, x and y) gets the spatial FFT alone and stays unbounded (the L_alpha penalty
  keeps it in range), since the colour matrix means nothing for displacements (lucid#168).

- ``auto`` (the default): ``fourier`` for a stream whose frame is at least ``AUTO_FOURIER_MIN_SIDE`` pixels on its
  shorter side, ``pixel`` below. Measured at the two ends: on EfficientNet-Lite0 at 224 px the Fourier path gives
  power-spectrum slopes about -2.3 (pixels: -1.4 to -1.6, grey high-frequency texture; docs/real_model_quality.md);
  on the 32-px reference net it washed the planted watermark's colour out to a third (config.py), while a 32-px
  frame has too few frequencies for a 1/f prior to shape anything. The cut at 64 px lies between the two and was not
  measured in between.

Both start from the same unit-space tensor (``initial`` is inverted into the Fourier variables), so the two
parameterisations begin at the same image and differ only in the geometry of the steps.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from workers.engine import streams as streams_mod
from workers.engine.config import LARGE_FRAME_MIN_SIDE
from workers.engine.manifest import InputSpec

Kind = Literal["auto", "pixel", "fourier"]
AUTO_FOURIER_MIN_SIDE = LARGE_FRAME_MIN_SIDE


def resolve_kind(kind: Kind, spec: InputSpec) -> Literal["pixel", "fourier"]:
    """What ``auto`` means for one stream (module docstring); other kinds unchanged. Pure."""
    if kind == "auto":
        return "fourier" if streams_mod.shortest_side([spec]) >= AUTO_FOURIER_MIN_SIDE else "pixel"
    return kind

# Lucid's ``color_correlation_svd_sqrt`` (lucid/optvis/param/color.py): the square root of ImageNet's RGB
# covariance; columns are the decorrelated directions (luminance first). Normalised by its largest column norm.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
SIGMOID_EPS = 1e-4  # pixels are kept this far from 0 and 1 when a start image is inverted through the sigmoid


def spectrum_scale(height: int, width: int, decay: float) -> torch.Tensor:
    """(H, W//2+1) weights of the rfft2 coefficients: 1 / max(f, 1/max(H, W))^decay with f the radial frequency
    in cycles per pixel, divided by their root mean square, so that unit-variance coefficients give a
    unit-variance image whatever the size (and the same Adam learning rate moves a pixel about as far as in
    pixel space)."""
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    f = torch.sqrt(fy * fy + fx * fx).clamp_min(1.0 / max(height, width))
    scale = f.pow(-decay)
    return scale / scale.square().mean().sqrt()


def _pixel_offset(spec: InputSpec) -> torch.Tensor:
    """(C,) the pixel value that unit space puts at 0: the manifest's mean (0 when absent). u = 2 (pixel - it)."""
    return torch.tensor(spec.mean if spec.mean is not None else [0.0, 0.0, 0.0])


class PixelParameterization:
    """The unit-space tensor is the variable."""

    kind = "pixel"

    def __init__(self, initial: torch.Tensor) -> None:
        self.tensor = initial.detach().clone().float().requires_grad_(True)

    @property
    def variables(self) -> list[torch.Tensor]:
        return [self.tensor]

    def unit(self) -> torch.Tensor:
        """(N, C, T, H, W) unit-space tensor."""
        return self.tensor


class FourierParameterization:
    """Per-frame spatial spectrum, 1/f^decay scaled; for RGB colour-decorrelated and squashed to valid pixels."""

    kind = "fourier"

    def __init__(self, initial: torch.Tensor, spec: InputSpec, decay: float, decorrelate: bool) -> None:
        n, c, t, h, w = initial.shape
        self.size = (h, w)
        self.rgb = spec.modality == "rgb"
        dev = initial.device
        self.scale = spectrum_scale(h, w, decay).to(dev)                     # (H, W//2+1)
        self.colour = (COLOR_CORRELATION if decorrelate else torch.eye(3)).to(dev) if self.rgb else None
        self.offset = _pixel_offset(spec).to(dev).view(1, -1, 1, 1, 1) if self.rgb else None
        spectrum = torch.fft.rfft2(self._to_field(initial.detach().float()), norm="ortho") / self.scale
        self.spectrum = torch.view_as_real(spectrum).contiguous().requires_grad_(True)  # (N,C,T,H,W//2+1,2)

    @property
    def variables(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def _to_field(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of the map after the FFT: unit space -> the field the spectrum describes."""
        if not self.rgb:
            return u
        pixels = (u / 2 + self.offset).clamp(SIGMOID_EPS, 1 - SIGMOID_EPS)
        logits = torch.logit(pixels)
        return torch.einsum("dc,nc...->nd...", torch.linalg.inv(self.colour), logits)

    def unit(self) -> torch.Tensor:
        """(N, C, T, H, W) unit-space tensor: irfft2 over (H, W) of the scaled spectrum, then for RGB
        u = 2 (sigmoid(M z) - mean) with M the colour matrix."""
        field = torch.fft.irfft2(torch.view_as_complex(self.spectrum) * self.scale, s=self.size, norm="ortho")
        if not self.rgb:
            return field
        pixels = torch.sigmoid(torch.einsum("dc,nc...->nd...", self.colour, field))
        return 2 * (pixels - self.offset)


Parameterization = PixelParameterization | FourierParameterization


def parameterize(kind: Kind, initial: torch.Tensor, spec: InputSpec, *, decay: float = 1.0,
                 decorrelate: bool = True) -> Parameterization:
    """The parameterisation ``kind`` of one stream, starting at ``initial`` (N, C, T, H, W) in unit space."""
    if tuple(initial.shape[1:]) != streams_mod.canonical_shape(spec):
        raise ValueError(f"initial tensor {tuple(initial.shape)} does not match stream {spec.name!r} "
                         f"{streams_mod.canonical_shape(spec)}")
    kind = resolve_kind(kind, spec)
    if kind == "pixel":
        return PixelParameterization(initial)
    if kind == "fourier":
        if not math.isfinite(decay) or decay < 0:
            raise ValueError(f"decay must be a non-negative number, got {decay}")
        return FourierParameterization(initial, spec, decay, decorrelate)
    raise ValueError(f"unknown parameterization {kind!r}")
