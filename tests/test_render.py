"""Rendering of visualisations (DESIGN 4.3): display frames, flow colour coding, and the artifact files
(GIF, MP4, PNG, NPY, difference maps), on tiny tensors."""
from __future__ import annotations

import colorsys
import os
import time

import av
import numpy as np
import pytest
from PIL import Image

from workers.engine.manifest import InputSpec
from workers.engine.render import (
    atomic_write,
    display_frames,
    flow_magnitude_strips,
    flow_max_magnitude,
    mp4_codec,
    render_difference_map,
    render_visualization,
)

MEAN, STD = [0.43, 0.39, 0.37], [0.23, 0.22, 0.22]
T, H, W = 4, 16, 16


def rgb_spec(mean=MEAN, std=STD) -> InputSpec:
    return InputSpec(name="appearance", modality="rgb", layout="NCTHW", shape=[3, T, H, W], mean=mean, std=std)


def flow_spec(scale: float | None = 20.0) -> InputSpec:
    return InputSpec(name="motion", modality="flow", layout="NCTHW", shape=[2, T, H, W], scale=scale)


def normalise(pixels01: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """(3, T, H, W) pixels in [0, 1] -> model space."""
    m, s = np.array(mean)[:, None, None, None], np.array(std)[:, None, None, None]
    return ((pixels01 - m) / s).astype(np.float32)


def moving_square(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """(3, t, h, w) pixels: a red square moving right over grey, every frame different."""
    pixels = np.full((3, t, h, w), 0.5, dtype=np.float32)
    for i in range(t):
        pixels[:, i, 4:9, 2 + 2 * i: 7 + 2 * i] = np.array([1.0, 0.0, 0.0])[:, None, None]
    return pixels


def hues(image: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1, 3) / 255.0
    return np.array([colorsys.rgb_to_hsv(*px)[0] for px in flat])


# --------------------------------------------------------------------------------------------- frames
def test_denormalisation_round_trips_a_known_pixel():
    pixels = np.full((3, 1, 2, 2), 0.5, dtype=np.float32)
    pixels[:, 0, 1, 0] = [0.8, 0.2, 0.6]
    frames = display_frames(normalise(pixels), rgb_spec(), min_size=1)
    assert frames.dtype == np.uint8 and frames.shape == (1, 2, 2, 3)
    assert frames[0, 1, 0].tolist() == [204, 51, 153]  # round(255 * [0.8, 0.2, 0.6])
    assert frames[0, 0, 0].tolist() == [128, 128, 128]


def test_rgb_without_mean_and_std_is_pixels_and_out_of_range_values_are_clipped():
    tensor = np.zeros((3, 1, 1, 2), dtype=np.float32)
    tensor[:, 0, 0, 0] = [0.25, -3.0, 7.0]
    tensor[:, 0, 0, 1] = [float("nan"), 1.0, 0.0]
    frames = display_frames(tensor, rgb_spec(mean=None, std=None), min_size=1)
    assert frames[0, 0, 0].tolist() == [64, 0, 255]
    assert frames[0, 0, 1].tolist() == [0, 255, 0]


def test_frames_are_upscaled_by_an_integer_factor_to_the_minimum_size():
    tensor = normalise(moving_square(t=2, h=10, w=15))
    frames = display_frames(tensor, rgb_spec(), min_size=128)
    assert frames.shape == (2, 130, 195, 3)  # factor ceil(128 / 10) = 13
    assert (frames[:, :13, :13] == frames[:, :1, :1]).all()  # nearest neighbour: blocks of 13 x 13
    assert display_frames(tensor, rgb_spec(), min_size=5).shape == (2, 10, 15, 3)


def test_zero_flow_is_white():
    frames = display_frames(np.zeros((2, T, H, W), dtype=np.float32), flow_spec())
    assert (frames == 255).all()


def test_pure_positive_x_flow_has_one_hue_everywhere():
    flow = np.zeros((2, T, H, W), dtype=np.float32)
    flow[0] = np.linspace(0.1, 1.0, T)[:, None, None]  # faster in later frames, always to the right
    frames = display_frames(flow, flow_spec(), min_size=1)
    h = hues(frames)
    assert np.ptp(h) < 1e-6
    left = display_frames(-flow, flow_spec(), min_size=1)
    assert abs(hues(left)[0] - h[0]) > 0.25  # the opposite direction is another colour


def test_flow_colours_share_one_scale_across_the_clip():
    flow = np.zeros((2, 2, 4, 4), dtype=np.float32)
    flow[0, 0], flow[0, 1] = 0.5, 1.0  # same direction, frame 1 twice as fast
    frames = display_frames(flow, flow_spec(), min_size=1)
    saturation = [colorsys.rgb_to_hsv(*(frames[t, 0, 0] / 255.0))[1] for t in range(2)]
    assert saturation[0] < saturation[1]  # per-frame normalisation would make them equal


def test_flow_max_puts_two_clips_on_one_scale():
    slow = np.zeros((2, 2, 4, 4), dtype=np.float32)
    slow[0] = 0.5
    fast = slow * 2
    sat = lambda frames: colorsys.rgb_to_hsv(*(frames[0, 0, 0] / 255.0))[1]  # noqa: E731
    alone = sat(display_frames(slow, flow_spec(), min_size=1))
    assert alone == pytest.approx(sat(display_frames(fast, flow_spec(), min_size=1)))  # each clip saturates
    shared = flow_max_magnitude(fast, flow_spec())
    slow_shared = display_frames(slow, flow_spec(), min_size=1, flow_max=shared)
    assert slow_shared.shape == (2, 4, 4, 3)
    assert sat(slow_shared) < alone
    assert sat(display_frames(fast, flow_spec(), min_size=1, flow_max=shared)) == pytest.approx(alone)


def test_magnitude_strips_show_x_on_top_and_y_below_in_a_diverging_map():
    flow = np.zeros((2, 2, 4, 4), dtype=np.float32)
    flow[0] = 1.0  # x: +1 everywhere, y: 0
    strips = flow_magnitude_strips(flow, flow_spec(), min_size=4)
    assert strips.shape == (4 + 2 + 4, 4 + 2 + 4, 3)  # two rows of two 4x4 frames with 2-pixel gaps
    top, bottom = strips[0, 0].astype(int), strips[-1, 0].astype(int)
    assert top[0] > top[2] + 50 and top[1] < 40  # saturated (dark) red: positive
    assert bottom.min() > 230  # white: zero
    negative = flow_magnitude_strips(-flow, flow_spec(), min_size=4)[0, 0].astype(int)
    assert negative[2] > negative[0] + 50  # blue: negative


def test_wrong_channel_count_is_rejected():
    with pytest.raises(ValueError, match="channels"):
        display_frames(np.zeros((3, T, H, W), dtype=np.float32), flow_spec())


# ---------------------------------------------------------------------------------------------- files
def test_rgb_visualisation_writes_every_artifact(tmp_path):
    tensor = normalise(moving_square())
    paths = render_visualization(tensor, rgb_spec(), tmp_path / "out", "walk_k0_s0")
    assert set(paths) == {"gif", "mp4", "png", "npy"}
    for key, path in paths.items():
        assert path == tmp_path / "out" / f"walk_k0_s0.{key}"
        assert path.stat().st_size > 0
    assert np.array_equal(np.load(paths["npy"]), tensor)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())

    with Image.open(paths["gif"]) as gif:
        assert gif.n_frames == T
        assert gif.info.get("loop") == 0
        assert gif.size == (128, 128)
    with Image.open(paths["png"]) as png:
        assert png.size == (T * 128 + (T - 1) * 2, 128)


def test_mp4_decodes_back_to_every_frame_at_the_display_size(tmp_path):
    pixels = moving_square()
    paths = render_visualization(normalise(pixels), rgb_spec(), tmp_path, "clip")
    with av.open(str(paths["mp4"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        # tagged with the matrix the frames were converted with (BT.601 = SMPTE 170M, limited range)
        assert (stream.codec_context.colorspace, stream.codec_context.color_primaries,
                stream.codec_context.color_trc, stream.codec_context.color_range) == (6, 6, 6, 1)
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == T
    assert decoded[0].shape == (128, 128, 3)
    expected = display_frames(normalise(pixels), rgb_spec())
    for got, want in zip(decoded, expected):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8  # lossy, but the same picture
    # the red square is where it should be, in RGB order
    assert decoded[0][48, 32].tolist()[0] > 200 and decoded[0][48, 32].tolist()[2] < 60


def test_mp4_of_odd_sized_frames_is_padded_to_even(tmp_path):
    tensor = normalise(moving_square(t=2, h=7, w=9))
    paths = render_visualization(tensor, rgb_spec(), tmp_path, "odd", min_size=7)  # factor 1: 7 x 9
    with av.open(str(paths["mp4"])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].height, frames[0].width) == (8, 10)


def test_static_clip_gif_keeps_the_loop_duration(tmp_path):
    still = np.repeat(normalise(moving_square(t=1)), 3, axis=1)  # three identical frames
    paths = render_visualization(still, rgb_spec(), tmp_path, "still", fps=10)
    with Image.open(paths["gif"]) as gif:
        total = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            total += gif.info["duration"]
    assert total == 300  # Pillow merges identical frames, the clip still lasts 3 frames at 10 fps


def test_flow_strip_png_has_the_magnitude_strips_below(tmp_path):
    flow = np.zeros((2, T, H, W), dtype=np.float32)
    flow[1] = 0.5
    paths = render_visualization(flow, flow_spec(), tmp_path, "motion")
    with Image.open(paths["png"]) as png:
        assert png.size == (T * 128 + (T - 1) * 2, 3 * 128 + 2 * 2)
    with Image.open(paths["gif"]) as gif:
        assert gif.size == (128, 128)


def test_mp4_codec_is_h264():
    assert mp4_codec() == "libx264"


def test_a_failed_write_leaves_neither_the_file_nor_a_temp_file(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def half_then_crash(handle):
        handle.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.png"]


# ------------------------------------------------------------------------------------ difference maps
def test_difference_map_writes_npy_and_a_heat_map_png(tmp_path):
    diff = np.zeros((8, 8))
    diff[2, 5] = 3.0
    paths = render_difference_map(diff, tmp_path, "walk_run_appearance", peak_xy=(5.5 / 8, 2.5 / 8))
    assert set(paths) == {"npy", "png"}
    assert np.array_equal(np.load(paths["npy"]), diff)
    with Image.open(paths["png"]) as png:
        image = np.asarray(png.convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # a colour map and a colour bar, not blank


def test_difference_map_blends_over_a_background_and_marks_the_peak(tmp_path):
    diff = np.random.default_rng(0).normal(size=(8, 8))  # signed: diverging map
    background = np.zeros((128, 128, 3), dtype=np.uint8)
    background[:, :, 1] = 255
    plain = render_difference_map(diff, tmp_path, "plain")["png"].read_bytes()
    over = render_difference_map(diff, tmp_path, "over", background=background)["png"].read_bytes()
    marked = render_difference_map(diff, tmp_path, "marked", background=background, peak_xy=(0.5, 0.5))
    assert len({plain, over, marked["png"].read_bytes()}) == 3

    def cyan_pixels(path) -> int:
        with Image.open(path) as png:
            image = np.asarray(png.convert("RGB")).astype(int)
        return int(((image[..., 0] < 60) & (image[..., 1] > 200) & (image[..., 2] > 200)).sum())

    assert cyan_pixels(tmp_path / "over.png") == 0
    assert cyan_pixels(marked["png"]) > 20  # the marker


@pytest.mark.parametrize("kwargs", [
    {"diff_map": np.zeros((2, 2, 2))},
    {"diff_map": np.zeros((4, 4)), "background": np.zeros((4, 4), dtype=np.uint8)},
    {"diff_map": np.zeros((4, 4)), "peak_xy": (1.5, 0.5)},
])
def test_difference_map_rejects_bad_arguments(tmp_path, kwargs):
    diff_map = kwargs.pop("diff_map")
    with pytest.raises(ValueError):
        render_difference_map(diff_map, tmp_path, "bad", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_next_write_removes_stale_part_files_of_a_killed_write_but_not_fresh_ones(tmp_path):
    target = tmp_path / "clip.png"
    stale = tmp_path / ".clip.png.abc123.part"
    fresh = tmp_path / ".clip.png.def456.part"
    other = tmp_path / ".other.png.abc123.part"
    for leftover in (stale, fresh, other):
        leftover.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write(target, lambda h: h.write(b"png"))
    assert target.read_bytes() == b"png"
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # a writer may still own it; another file's leftovers wait for it
