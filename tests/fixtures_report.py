"""Builds a realistic sample report dict (DESIGN 3.4) and its tiny artifact files, so report tests need no model.

Clips are small synthetic videos (a moving disc for appearance, a colour-coded flow pattern for motion) written
as GIF (Pillow), MP4 (H.264 through PyAV), PNG frame strips and ``.npy`` tensors; difference maps are PNG heat
maps with a blob at the pair's peak. Paths in the report are relative to the output folder.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from matplotlib import colormaps
from PIL import Image

SAMPLE_CLASSES = ("DiscSlideRight", "DiscGlideRight", "SquareSpinLeft", "SquareTurnLeft",
                  "TriangleBounce", "TriangleHop")
SAMPLE_KAPPAS = (0.0, 1.0, 4.0)
CLIP_SIZE = 64  # even, as H.264 with yuv420p needs
CLIP_FRAMES = 8
CLIP_FPS = 8

# true class (rows) x predicted class (columns); the three audited pairs are (0, 1), (2, 3), (4, 5)
SAMPLE_MATRIX = [
    [4, 41, 2, 1, 1, 1],
    [5, 43, 0, 1, 0, 1],
    [1, 0, 30, 17, 1, 1],
    [0, 1, 12, 35, 1, 1],
    [1, 1, 0, 1, 40, 7],
    [0, 2, 1, 0, 9, 38],
]


def build_sample_report(out_dir: Path, *, classes: Sequence[str] = SAMPLE_CLASSES,
                        kappas: Sequence[float] = SAMPLE_KAPPAS) -> dict[str, Any]:
    """Write the artifacts of a three-pair, two-stream audit under ``out_dir`` and return its report dict.

    ``classes`` (six names) may be replaced, e.g. by a hostile name for escaping tests: artifact folders are
    named by class index, never by name. The pairs cover: two flags of different severity with a review on one
    (pair 1), a GIF-only clip, a missing score key and an unknown extra score (pair 2), an explicit pair with
    no flags (pair 3).
    """
    classes = list(classes)
    if len(classes) != len(SAMPLE_CLASSES):
        raise ValueError(f"need {len(SAMPLE_CLASSES)} class names, got {len(classes)}")
    out_dir = Path(out_dir)
    matrix = np.asarray(SAMPLE_MATRIX)
    streams = [{"name": "appearance", "modality": "rgb"}, {"name": "motion", "modality": "flow"}]
    levels = [{"index": i, "kappa": float(k)} for i, k in enumerate(kappas)]

    clips: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for ci in range(len(classes)):
        clips[ci] = {}
        for stream in streams:
            entries = []
            for level in levels:
                rel = f"artifacts/c{ci:02d}/{stream['name']}/level{level['index']}"
                frames = _clip_frames(ci, stream["modality"], level["kappa"])
                _write_clip(out_dir / rel, frames)
                entries.append({"level": level["index"], "kappa": level["kappa"], "seed": 0,
                                "gif": f"{rel}.gif", "mp4": f"{rel}.mp4", "png": f"{rel}.png",
                                "npy": f"{rel}.npy"})
            clips[ci][stream["name"]] = entries

    pairs = []
    for rank, (ia, ib) in enumerate(((0, 1), (2, 3), (4, 5)), start=1):
        a, b = classes[ia], classes[ib]
        peaks = {"appearance": (0.15, 0.14), "motion": (0.7, 0.55)} if rank == 1 else \
            {"appearance": (0.5, 0.8), "motion": (0.35, 0.4)}
        difference = {}
        for stream in streams:
            rel = f"artifacts/pair{rank}/difference_{stream['name']}"
            _write_difference_map(out_dir / rel, peaks[stream["name"]], sharp=rank == 1)
            difference[stream["name"]] = {"png": f"{rel}.png", "npy": f"{rel}.npy"}
        pair_clips = {a: copy.deepcopy(clips[ia]), b: copy.deepcopy(clips[ib])}
        pairs.append({
            "a": a, "b": b, "rank": rank, "explicit": rank == 3,
            "confusion": {"a_as_b": round(matrix[ia, ib] / matrix[ia].sum(), 4),
                          "b_as_a": round(matrix[ib, ia] / matrix[ib].sum(), 4),
                          "counts": [int(matrix[ia, ib]), int(matrix[ib, ia])]},
            "scores": _scores(a, b, rank, peaks),
            "flags": _flags(rank, peaks),
            "artifacts": {"clips": pair_clips, "difference": difference},
        })
    # pair 2: the appearance clip of b at the highest level has no MP4 (GIF alone)
    pairs[1]["artifacts"]["clips"][classes[3]]["appearance"][-1].pop("mp4")

    return {
        "audit": {
            "id": "a1",
            "model": {"name": "tiny-twostream", "version": "2026.11.1",
                      "sha256": "9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"},
            "status": "done",
            "options": {"top_k": 3, "levels": len(levels), "seeds": 1, "steps": 256,
                        "pairs": [[classes[4], classes[5]]]},
            "timings": {"total_s": 12.3, "visualise_s": 9.8, "score_s": 1.9},
            "classes": classes,
            "confusion": {"classes": classes, "matrix": SAMPLE_MATRIX},
            "streams": streams,
            "levels": levels,
        },
        "pairs": pairs,
    }


def _scores(a: str, b: str, rank: int, peaks: dict[str, tuple[float, float]]) -> dict[str, Any]:
    rng = np.random.default_rng(rank)

    def r(lo: float, hi: float) -> float:
        return round(float(rng.uniform(lo, hi)), 3)

    scores: dict[str, Any] = {
        stream: {"cross_activation": {"a_on_b": r(0.1, 0.6), "b_on_a": r(0.1, 0.6)},
                 "feature_similarity": r(0.4, 0.95), "separation_margin": r(0.5, 3.0),
                 "difference_concentration": r(0.1, 0.7), "peak_xy": list(peaks[stream]),
                 "difference_peak_xy": [round(1 - peaks[stream][0], 3), round(1 - peaks[stream][1], 3)]}
        for stream in ("appearance", "motion")
    }
    scores["stream_reliance"] = {c: {"appearance": r(0.2, 0.8), "motion": r(0.1, 0.7)} for c in (a, b)}
    scores["speed_invariance"] = {c: {"appearance": r(0.6, 0.99), "motion": r(0.3, 0.9)} for c in (a, b)}
    if rank == 2:  # the scoring module may omit keys and add new ones
        del scores["motion"]["difference_concentration"]
        scores["motion"]["flow_energy_ratio"] = 1.74
        scores["calibration"] = {"temperature": 1.3}
    return scores


def _flags(rank: int, peaks: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    if rank == 1:
        return [
            {"id": 17, "code": "LOCALIZED_CUE", "stream": "appearance", "severity": "high",
             "peak_xy": list(peaks["appearance"]),
             "message": "The appearance difference sits in a small patch near the top-left corner; "
                        "check the training clips for a watermark there.",
             "review": None},
            {"id": 18, "code": "SHARED_EVIDENCE", "stream": "motion", "severity": "medium",
             "peak_xy": list(peaks["motion"]),
             "message": "Both classes are driven by nearly the same motion pattern.",
             "review": {"verdict": "confirmed", "note": "Same camera pan in both classes.",
                        "by": "reviewer@example.org", "at": "2026-11-20T10:04:00Z"}},
        ]
    if rank == 2:
        return [{"code": "MOTION_ONLY_SEPARATION", "stream": "appearance", "severity": "low",
                 "peak_xy": list(peaks["appearance"]),
                 "message": "Appearance is near-identical; the model tells these apart by motion alone.",
                 "review": None}]
    return []


def _clip_frames(class_index: int, modality: str, kappa: float) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: a disc moving faster at low kappa (rgb), or a flow colour wheel (flow)."""
    n = CLIP_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1)
    speed = 1.0 / (1.0 + kappa)
    hue = (class_index * 0.17) % 1.0
    frames = []
    for t in range(CLIP_FRAMES):
        phase = 2 * np.pi * t / CLIP_FRAMES
        if modality == "rgb":
            cx = 0.5 + 0.3 * speed * np.cos(phase + class_index)
            cy = 0.5 + 0.3 * speed * np.sin(phase + class_index)
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.04).astype(np.float32)
            base = 0.25 + 0.15 * np.stack([xx, yy, 1 - xx], axis=-1)
            colour = np.asarray(colormaps["hsv"](hue)[:3], dtype=np.float32)
            frame = base * (1 - disc[..., None]) + colour * disc[..., None]
        else:
            angle = np.arctan2(yy - 0.5, xx - 0.5) + phase * speed + class_index
            radius = np.clip(np.hypot(xx - 0.5, yy - 0.5) * 2, 0, 1)
            frame = np.asarray(colormaps["hsv"]((angle / (2 * np.pi)) % 1.0))[..., :3] * radius[..., None] \
                + (1 - radius[..., None])
        frames.append(np.clip(frame * 255, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _write_clip(stem: Path, frames: np.ndarray) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(stem.with_suffix(".gif"), save_all=True, append_images=images[1:],
                   duration=1000 // CLIP_FPS, loop=0)
    Image.fromarray(np.concatenate(list(frames), axis=1)).save(stem.with_suffix(".png"))
    np.save(stem.with_suffix(".npy"), (frames[:, ::2, ::2] / 255.0).astype(np.float16))  # kept tiny
    with av.open(str(stem.with_suffix(".mp4")), mode="w", format="mp4",
                 options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_difference_map(stem: Path, peak: tuple[float, float], *, sharp: bool) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    n = CLIP_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1)
    width = 0.05 if sharp else 0.2
    t_map = 4.0 * np.exp(-((xx - peak[0]) ** 2 + (yy - peak[1]) ** 2) / (2 * width ** 2))
    t_map += 0.3 * np.sin(7 * xx) * np.cos(5 * yy)
    np.save(stem.with_suffix(".npy"), t_map)
    rgb = colormaps["magma"](np.clip(t_map / 4.0, 0, 1))[..., :3]
    Image.fromarray((rgb * 255).astype(np.uint8)).save(stem.with_suffix(".png"))
