"""Regularisers of activation maximisation (DESIGN 4.1) as pure functions on batches of clips.

Every function takes a canonical stream tensor ``u`` of shape (N, C, T, H, W) in *unit space* (the model's
input divided by its natural half-range, so a typical value is within [-1, 1]) and returns one value per row,
shape (N,). Each is a mean over the elements it sums, which is the normalisation by input size of Mahendran &
Vedaldi (2015): the same weight then means the same thing for a 32x32x8 clip and a 224x224x16 one.
"""
from __future__ import annotations

import torch


def lp_norm(u: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """R_alpha(u: (N,C,T,H,W)) -> (N,): mean of |u|^alpha. With alpha = 6 it is ~0 inside the natural range and
    grows steeply outside it, so it acts as a soft box constraint."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return u.abs().pow(alpha).flatten(1).mean(dim=1)


def spatial_tv(u: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """R_S(u: (N,C,T,H,W)) -> (N,): mean over channels, frames and pixels (H-1 x W-1) of
    ((u[y, x+1] - u[y, x])^2 + (u[y+1, x] - u[y, x])^2)^(beta/2), per frame."""
    if u.shape[-1] < 2 or u.shape[-2] < 2:
        return u.new_zeros(u.shape[0])
    dx = u[..., :-1, 1:] - u[..., :-1, :-1]
    dy = u[..., 1:, :-1] - u[..., :-1, :-1]
    sq = dx.square() + dy.square()
    value = sq if beta == 2.0 else (sq + 1e-12).pow(beta / 2.0)
    return value.flatten(1).mean(dim=1)


def temporal_variation(u: torch.Tensor) -> torch.Tensor:
    """R_T(u: (N,C,T,H,W)) -> (N,): mean of (u[t+1] - u[t])^2 over channels, T-1 frame steps and pixels; zero when
    T = 1. Weighted by kappa in the objective: a large kappa forces slow, smooth change over time."""
    if u.shape[2] < 2:
        return u.new_zeros(u.shape[0])
    return (u[:, :, 1:] - u[:, :, :-1]).square().flatten(1).mean(dim=1)
