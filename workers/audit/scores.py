"""Pure scores that compare visualisations (DESIGN 4.4): per-pixel descriptors, the seed-consistent difference
map with its concentration and peak, and similarities. Arrays in, numbers out; no model here (see ``analysis``).

Shapes: a *sample set* is (S, C, T, H, W): S visualisations (seeds x kappa levels) of one class and stream, in
model space, canonical layout.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-8


def pixel_descriptor(x: np.ndarray, modality: str = "rgb") -> np.ndarray:
    """Per-pixel class evidence of a sample set (S, C, T, H, W).

    rgb -> (S, 2C, H, W): per channel the temporal mean (the colour that is there) and the temporal mean absolute
    deviation (how much it changes). flow -> (S, 1, H, W): the mean flow energy |v|^2 over frames, which is
    invariant to direction and phase, so a back-and-forth flicker whose sign differs between seeds still counts as
    the same evidence (the signed mean flow of a flicker averages to zero)."""
    if modality == "flow":
        return (x ** 2).sum(axis=1).mean(axis=1)[:, None]
    mean = x.mean(axis=2)
    change = np.abs(x - mean[:, :, None]).mean(axis=2)
    return np.concatenate([mean, change], axis=1)


def consistent_difference_map(a: np.ndarray, b: np.ndarray, modality: str = "rgb", *,
                              t_full: float = 3.0, floor: float = 0.05) -> np.ndarray:
    """Where two classes' visualisations differ, *consistently* across samples.

    a: (Sa, C, T, H, W), b: (Sb, C, T, H, W), Sa, Sb >= 1. Per descriptor element: the Welch t-statistic
    t = (mean_a - mean_b) / sqrt(var_a / Sa + var_b / Sb) (spread floored at ``floor`` x the descriptors' overall
    standard deviation), and the effect size |mean_a - mean_b| / overall standard deviation. The map is the effect
    size gated by consistency, effect x min(1, |t| / t_full): a difference seen in one seed only (|t| small) is
    discounted, while among consistent differences the *large* ones stand out. A bare t-map would not do: class
    visualisations are so repeatable that small differences everywhere reach large t and drown a planted cue.
    Returns the map (H, W): root mean square over descriptor channels."""
    da, db = pixel_descriptor(a, modality), pixel_descriptor(b, modality)
    diff = da.mean(axis=0) - db.mean(axis=0)
    var_a = da.var(axis=0, ddof=1) if len(da) > 1 else np.zeros_like(diff)
    var_b = db.var(axis=0, ddof=1) if len(db) > 1 else np.zeros_like(diff)
    spread = np.sqrt(var_a / len(da) + var_b / len(db))
    scale = float(np.concatenate([da, db]).std()) + EPS
    t = diff / np.maximum(spread, floor * scale)
    gated = np.abs(diff) / scale * np.minimum(1.0, np.abs(t) / t_full)
    return np.sqrt(np.mean(gated ** 2, axis=0))


def energy_concentration(m: np.ndarray, top_fraction: float = 0.05) -> float:
    """Share of the energy sum(m^2) held by the top ``top_fraction`` of pixels of m (H, W); 1 = all in a spot,
    ``top_fraction`` = spread evenly."""
    energy = np.sort((m.astype(np.float64) ** 2).ravel())[::-1]
    k = max(1, int(round(top_fraction * energy.size)))
    total = energy.sum()
    return float(energy[:k].sum() / total) if total > 0 else 0.0


def box_blur(m: np.ndarray, radius: int = 1) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges replicated; (H, W) -> (H, W)."""
    padded = np.pad(m, radius, mode="edge")
    out = np.zeros_like(m, dtype=np.float64)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            out += padded[dy:dy + m.shape[0], dx:dx + m.shape[1]]
    return out / size ** 2


def peak_xy(m: np.ndarray) -> tuple[float, float]:
    """Normalised (x, y) in [0, 1] of the centre of the strongest 3x3 neighbourhood of m (H, W)."""
    blurred = box_blur(m, 1)
    y, x = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
    return ((x + 0.5) / m.shape[1], (y + 0.5) / m.shape[0])


def cosine_similarity(u: np.ndarray, v: np.ndarray) -> float:
    u, v = np.ravel(u).astype(np.float64), np.ravel(v).astype(np.float64)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu < EPS or nv < EPS:
        return 0.0
    return float(u @ v / (nu * nv))


def speed_invariance(levels: list[np.ndarray], modality: str = "rgb") -> float:
    """Mean pairwise cosine similarity between the mean pixel descriptors of one class's visualisations at each
    kappa level; ``levels`` holds one (S, C, T, H, W) sample set per level. 1 = the same evidence at every speed."""
    if len(levels) < 2:
        return 1.0
    means = [pixel_descriptor(x, modality).mean(axis=0) for x in levels]
    sims = [cosine_similarity(means[i], means[j]) for i in range(len(means)) for j in range(i + 1, len(means))]
    return float(np.mean(sims))

