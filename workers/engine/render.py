"""Rendering of visualisations (DESIGN 4.3): turns a stream tensor in the engine's canonical layout into
display frames, and writes the artifacts of one visualisation (GIF, MP4, PNG strip, raw ``.npy``) and of
one difference map (heat-map PNG, raw ``.npy``), each file atomically.

Canonical layout: ``(C, T, H, W)`` float32 in the model's input space. RGB: ``(pixel01 - mean) / std``,
C = 3. Flow: ``displacement_in_pixels / scale``, C = 2 (x, y). Only ``modality``, ``mean``, ``std`` and
``scale`` of the ``InputSpec`` are used here; the manifest's own layout (``NCHW`` stacked frames) has been
unfolded to ``(C, T, H, W)`` by the caller.
"""
from __future__ import annotations

import io
import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import av
import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import flow_to_image

from workers.engine.files import atomic_path, atomic_write
from workers.engine.manifest import InputSpec

# Codecs tried for MP4, best first. libx264 plays everywhere (Chromium included) in yuv420p; mpeg4
# (MPEG-4 part 2) is the fallback for FFmpeg builds without an H.264 encoder: it does not play in Chromium.
MP4_CODECS = ("libx264", "libopenh264", "mpeg4")

STRIP_GAP = 2  # pixels between frames in a strip
STRIP_GAP_COLOUR = (96, 96, 96)  # dark: white separators vanish next to weak (white) flow
DIVERGING_CMAP = "RdBu_r"  # flow x/y strips: red positive, blue negative, white zero
HEAT_CMAP = "inferno"  # non-negative difference maps
SIGNED_HEAT_CMAP = "RdBu_r"  # difference maps with negative values


# --------------------------------------------------------------------------------------------- frames
def _check_tensor(tensor: np.ndarray, spec: InputSpec) -> np.ndarray:
    array = np.asarray(tensor, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"expected a (C, T, H, W) tensor, got shape {array.shape}")
    if array.shape[0] != spec.base_channels:
        raise ValueError(
            f"a {spec.modality} tensor needs {spec.base_channels} channels in (C, T, H, W), got shape {array.shape}"
        )
    if min(array.shape[1:]) < 1:
        raise ValueError(f"empty tensor of shape {array.shape}")
    return array


def upscale_factor(height: int, width: int, min_size: int) -> int:
    """Smallest integer factor that makes the shorter side at least ``min_size`` (at least 1)."""
    return max(1, math.ceil(min_size / min(height, width)))


def _upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``(T, H, W, 3)`` by an integer factor."""
    if factor == 1:
        return frames
    return np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)


def rgb_to_pixels(tensor: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``(3, T, H, W)`` model-space RGB -> ``(T, H, W, 3)`` float pixels in [0, 1] (de-normalised, clipped)."""
    mean = np.asarray(spec.mean if spec.mean is not None else [0.0, 0.0, 0.0], dtype=np.float32)
    std = np.asarray(spec.std if spec.std is not None else [1.0, 1.0, 1.0], dtype=np.float32)
    pixels = tensor * std[:, None, None, None] + mean[:, None, None, None]
    return np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0).transpose(1, 2, 3, 0)


def flow_to_pixels(tensor: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``(2, T, H, W)`` model-space flow -> displacement in pixels, same shape."""
    scale = spec.scale if spec.scale is not None else 1.0
    return np.nan_to_num(tensor, nan=0.0, posinf=0.0, neginf=0.0) * np.float32(scale)


def flow_max_magnitude(tensor: np.ndarray, spec: InputSpec) -> float:
    """Largest displacement (pixels) in one model-space flow tensor ``(2, T, H, W)``: pass the largest over
    several clips as ``flow_max`` to draw them on one colour scale."""
    flow = flow_to_pixels(_check_tensor(tensor, spec), spec)
    return float(np.sqrt((flow ** 2).sum(axis=0)).max())


def display_frames(tensor: np.ndarray, spec: InputSpec, *, min_size: int = 128,
                   flow_max: float | None = None) -> np.ndarray:
    """Display frames of one stream tensor.

    ``tensor: (C, T, H, W)`` model space -> ``uint8 (T, H*f, W*f, 3)`` with the smallest integer ``f`` that
    makes the shorter side ``>= min_size`` (nearest neighbour, so model pixels stay visible as blocks).
    RGB is de-normalised and clipped to [0, 1]. Flow is colour-coded with torchvision's ``flow_to_image``
    on the displacement in pixels, all frames in one call so that one colour scale (the clip's largest
    displacement = full saturation, or ``flow_max`` pixels when given: use one value for clips that are
    compared) holds across the clip; zero flow is white.
    """
    array = _check_tensor(tensor, spec)
    if spec.modality == "rgb":
        frames = np.rint(rgb_to_pixels(array, spec) * 255.0).astype(np.uint8)
    else:
        pixels = flow_to_pixels(array, spec).transpose(1, 0, 2, 3)  # (T, 2, H, W)
        if flow_max is not None:
            # flow_to_image saturates at the batch's largest displacement: one extra frame holding a single
            # vector of length flow_max (dropped below) pins that to the shared scale
            pin = np.zeros((1, *pixels.shape[1:]), np.float32)
            pin[0, 0, 0, 0] = max(flow_max, float(np.sqrt((pixels ** 2).sum(axis=1)).max()))
            pixels = np.concatenate([pixels, pin])
        frames = flow_to_image(torch.from_numpy(np.ascontiguousarray(pixels))).permute(0, 2, 3, 1).numpy()
        frames = frames[:array.shape[1]]
    factor = upscale_factor(array.shape[2], array.shape[3], min_size)
    return np.ascontiguousarray(_upscale(frames, factor))


def _colormap(name: str) -> matplotlib.colors.Colormap:
    return matplotlib.colormaps[name]


def _tile_row(frames: np.ndarray, gap: int = STRIP_GAP) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(H, T*W + (T-1)*gap, 3)``: frames side by side."""
    t, h, w, _ = frames.shape
    row = np.empty((h, t * w + (t - 1) * gap, 3), dtype=np.uint8)
    row[:] = STRIP_GAP_COLOUR
    for i in range(t):
        row[:, i * (w + gap): i * (w + gap) + w] = frames[i]
    return row


def _stack_rows(rows: list[np.ndarray], gap: int = STRIP_GAP) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = STRIP_GAP_COLOUR
    y = 0
    for r in rows:
        out[y: y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out


def flow_magnitude_strips(tensor: np.ndarray, spec: InputSpec, *, min_size: int = 128,
                          flow_max: float | None = None) -> np.ndarray:
    """x and y flow components as two strips of frames, in a diverging colour map.

    ``tensor: (2, T, H, W)`` model-space flow -> ``uint8 (2*H*f + gap, T*W*f + (T-1)*gap, 3)``: the top
    strip is the x component, the bottom one y, frames left to right, with the same upscaling and gaps as
    the frame strip so that they line up under it. One symmetric scale ``[-m, m]`` for both components and
    all frames (``m`` = the largest absolute component in pixels, or ``flow_max`` when given): red is
    positive (right / down), blue negative, white zero.
    """
    array = _check_tensor(tensor, spec)
    if spec.modality != "flow":
        raise ValueError(f"magnitude strips need a flow tensor, got modality {spec.modality!r}")
    flow = flow_to_pixels(array, spec)
    limit = max(float(np.abs(flow).max()), flow_max or 0.0)
    normalised = flow / limit if limit > 0 else np.zeros_like(flow)
    cmap = _colormap(DIVERGING_CMAP)
    coloured = (cmap((normalised + 1.0) / 2.0)[..., :3] * 255.0).round().astype(np.uint8)  # (2, T, H, W, 3)
    factor = upscale_factor(array.shape[2], array.shape[3], min_size)
    rows = [_tile_row(_upscale(coloured[c], factor)) for c in range(2)]
    return _stack_rows(rows)


def frame_strip(tensor: np.ndarray, spec: InputSpec, *, min_size: int = 128,
                flow_max: float | None = None) -> np.ndarray:
    """The PNG strip: display frames side by side; for flow, the x/y strips below."""
    rows = [_tile_row(display_frames(tensor, spec, min_size=min_size, flow_max=flow_max))]
    if spec.modality == "flow":
        rows.append(flow_magnitude_strips(tensor, spec, min_size=min_size, flow_max=flow_max))
    return _stack_rows(rows)


@lru_cache(maxsize=1)
def mp4_codec() -> str:
    """The first encoder of ``MP4_CODECS`` that the bundled FFmpeg has and that opens."""
    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError by version
            continue
        return name
    raise RuntimeError(f"this FFmpeg build has none of the encoders {MP4_CODECS}")


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad ``(T, H, W, 3)`` to even H and W (edge pixels repeated): yuv420p needs even sizes."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _write_mp4(target: Path, frames: np.ndarray, fps: float) -> None:
    # By path, not file object: "+faststart" (index first, so browsers start playing at once) reopens it.
    frames = _even(frames)
    codec = mp4_codec()
    with av.open(str(target), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # High profile yuv420p plays in every browser; crf 18 keeps thin structures visible. The RGB -> YUV
            # conversion below is swscale's default (BT.601, limited range): say so, or players guess BT.709.
            stream.options = {"crf": "18", "preset": "medium", "profile": "high",
                              "x264-params": "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv"}
        else:
            stream.bit_rate = 4_000_000
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _atomic_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    with atomic_path(path) as tmp:
        _write_mp4(tmp, frames, fps)
    return path


def _write_gif(handle: BinaryIO, frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(f) for f in frames]
    # Pillow merges consecutive identical frames into one longer frame; the loop plays the same.
    images[0].save(
        handle, format="GIF", save_all=True, append_images=images[1:],
        duration=max(1, round(1000 / fps)), loop=0, optimize=False,
    )


def _write_png(handle: BinaryIO, image: np.ndarray) -> None:
    Image.fromarray(image).save(handle, format="PNG")


def _write_npy(handle: BinaryIO, array: np.ndarray) -> None:
    np.save(handle, array, allow_pickle=False)


def render_visualization(
    tensor: np.ndarray, spec: InputSpec, out_dir: Path, stem: str, *, fps: float = 8.0, min_size: int = 128,
    flow_max: float | None = None,
) -> dict[str, Path]:
    """Write the artifacts of one visualisation ``tensor: (C, T, H, W)`` (model space) into ``out_dir``.

    Returns ``{"gif", "mp4", "png", "npy"}`` -> paths ``{stem}.gif`` (looping), ``{stem}.mp4`` (H.264
    yuv420p, sizes padded to even), ``{stem}.png`` (frame strip; for flow the x/y strips below) and
    ``{stem}.npy`` (the tensor as float32, unchanged). Each file is written atomically. ``flow_max``: the
    displacement (pixels) drawn at full saturation, shared by the clips a reviewer compares.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    array = _check_tensor(tensor, spec)
    out_dir = Path(out_dir)
    frames = display_frames(array, spec, min_size=min_size, flow_max=flow_max)
    strip = frame_strip(array, spec, min_size=min_size, flow_max=flow_max)
    return {
        "gif": atomic_write(out_dir / f"{stem}.gif", lambda h: _write_gif(h, frames, fps)),
        "mp4": _atomic_mp4(out_dir / f"{stem}.mp4", frames, fps),
        "png": atomic_write(out_dir / f"{stem}.png", lambda h: _write_png(h, strip)),
        "npy": atomic_write(out_dir / f"{stem}.npy", lambda h: _write_npy(h, array)),
    }


# ----------------------------------------------------------------------------------- difference maps
def _heat_png(
    diff_map: np.ndarray, background: np.ndarray | None, peak_xy: tuple[float, float] | None, alpha: float
) -> bytes:
    finite = diff_map[np.isfinite(diff_map)]
    shown = np.nan_to_num(
        diff_map,
        nan=0.0,
        posinf=float(finite.max()) if finite.size else 0.0,
        neginf=float(finite.min()) if finite.size else 0.0,
    )
    if shown.min() < 0:
        limit = float(np.abs(shown).max()) or 1.0
        cmap, vmin, vmax = SIGNED_HEAT_CMAP, -limit, limit
    else:
        cmap, vmin, vmax = HEAT_CMAP, 0.0, float(shown.max()) or 1.0

    fig = Figure(figsize=(4.0, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = (0.0, 1.0, 1.0, 0.0)  # image fractions, (0, 0) = top-left corner, as peak_xy
    if background is not None:
        ax.imshow(background, extent=extent, interpolation="nearest")
        heat = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, alpha=alpha,
                         interpolation="nearest")
    else:
        heat = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    if peak_xy is not None:
        ax.plot([peak_xy[0]], [peak_xy[1]], marker="+", markersize=14, markeredgewidth=2.5, color="cyan")
        ax.plot([peak_xy[0]], [peak_xy[1]], marker="o", markersize=14, markeredgewidth=1.5,
                markerfacecolor="none", color="cyan")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(1.0, 0.0)
    ax.set_axis_off()
    fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.04)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    return buffer.getvalue()


def render_difference_map(
    diff_map: np.ndarray,
    out_dir: Path,
    stem: str,
    *,
    background: np.ndarray | None = None,
    peak_xy: tuple[float, float] | None = None,
    alpha: float = 0.6,
) -> dict[str, Path]:
    """Write a difference map ``diff_map: (H, W)`` as ``{stem}.npy`` (unchanged) and ``{stem}.png``.

    The PNG is a heat map with a colour bar: ``inferno`` on ``[0, max]`` for a non-negative map,
    ``RdBu_r`` on ``[-m, m]`` when the map has negative values (non-finite values are shown clipped).
    With ``background: uint8 (H', W', 3)`` (e.g. a display frame) the heat map is drawn over it with
    ``alpha``, the two stretched to the same extent. ``peak_xy`` is marked: normalised ``(x, y)`` in
    image fractions, ``(0, 0)`` the top-left corner and ``(1, 1)`` the bottom-right one, so the centre of
    pixel ``(row, col)`` is ``((col + 0.5) / W, (row + 0.5) / H)``.
    """
    array = np.asarray(diff_map)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"a difference map must be (H, W), got shape {array.shape}")
    if background is not None:
        background = np.asarray(background)
        if background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.uint8:
            raise ValueError(f"background must be uint8 (H, W, 3), got {background.dtype} {background.shape}")
    if peak_xy is not None and not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in peak_xy):
        raise ValueError(f"peak_xy must be two numbers in [0, 1], got {peak_xy}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out_dir = Path(out_dir)
    png = _heat_png(array.astype(np.float64), background, peak_xy, alpha)
    return {
        "npy": atomic_write(out_dir / f"{stem}.npy", lambda h: _write_npy(h, array)),
        "png": atomic_write(out_dir / f"{stem}.png", lambda h: h.write(png)),
    }
