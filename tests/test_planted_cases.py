"""The planted-shortcut case generator (workers/engine/reference/cases.py) and the pure scoring of an audit's flags
against its truth (workers/engine/reference/scoring.py)."""
from __future__ import annotations

import colorsys
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.engine.reference import cases, scoring
from workers.engine.reference.cases import CaseClass, Cue
from workers.engine.reference.scoring import FlagRecord, PairOutcome

TINY = {"per_class_train": 3, "per_class_test": 2, "epochs": 1, "batch_size": 16}
RIGHT = CaseClass("DiscRight1", "disc", "right", 3.8)


def cue_of(family: str, split: str = "calibration", seed: int = 0, stream: str = "appearance") -> Cue:
    return cases.draw_cue(family, RIGHT.name, "DiscRight2", stream, split, np.random.default_rng(seed))


def render(cues: tuple[Cue, ...], seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return cases.render_case_clip(RIGHT, np.random.default_rng(seed), cues, np.random.default_rng(seed + 1))


# ---------------------------------------------------------------- specs and splits


def test_case_specs_are_deterministic_and_a_longer_list_starts_with_the_shorter_one() -> None:
    assert cases.case_specs("calibration", 6) == cases.case_specs("calibration", 6)
    assert cases.case_specs("heldout", 6)[:3] == cases.case_specs("heldout", 3)
    assert cases.case_specs("heldout", 3)[0].key() != cases.case_specs("calibration", 3)[0].key()


def test_generated_clips_are_identical_for_a_spec() -> None:
    spec = cases.case_specs("calibration", 1)[0]
    one, two = (cases.generate_case_clips(spec, "train", 2) for _ in range(2))
    assert np.array_equal(one.rgb, two.rgb) and np.array_equal(one.flow, two.flow)
    assert np.array_equal(one.labels, two.labels)


@pytest.mark.parametrize("split", cases.SPLITS)
def test_each_split_of_20_cases_uses_every_family_and_architecture_several_times(split: str) -> None:
    specs = cases.case_specs(split, 20)
    families = [c.family for s in specs for c in s.cues]
    assert min(families.count(f) for f in cases.FAMILIES) >= 3
    on = {(c.family, s.architecture) for s in specs for c in s.cues}
    assert on == {(f, a) for f in cases.FAMILIES for a in cases.ARCHITECTURES}
    assert min([s.architecture for s in specs].count(a) for a in cases.ARCHITECTURES) >= 6
    for s in specs:
        names = s.class_names
        cued = {n for c in s.cues for n in (c.class_name, c.partner)}
        assert 2 <= len(s.cues) <= 3 and len({c.family for c in s.cues}) == len(s.cues)
        assert len(cued) == 2 * len(s.cues)                      # different pairs
        assert len(s.clean_pairs) >= 2 and not cued & {n for p in s.clean_pairs for n in p}
        assert 7 <= len(names) <= 9 and len(set(names)) == len(names)
        for c in s.cues:
            partner, cued_class = (next(k for k in s.classes if k.name == n) for n in (c.partner, c.class_name))
            assert (partner.shape, partner.motion) == (cued_class.shape, cued_class.motion)
            assert c.stream == ("clip" if s.architecture == "c3d_single"
                                else "appearance" if c.family in cases.STATIC_FAMILIES else "motion")
            assert c.local == (c.family in cases.LOCAL_FAMILIES)


def _hue(colour: tuple[float, float, float]) -> float:
    return colorsys.rgb_to_hsv(*colour)[0]


def test_calibration_and_heldout_differ_in_seeds_and_in_every_family_design() -> None:
    cal, held = cases.case_specs("calibration", 40), cases.case_specs("heldout", 40)
    assert not {s.seed for s in cal} & {s.seed for s in held}

    def designs(specs: list[cases.CaseSpec], family: str) -> list[Cue]:
        return [c for s in specs for c in s.cues if c.family == family]

    def signature(c: Cue) -> tuple:
        """What a threshold could be fitted to: design, period, size of the patch, amplitude."""
        side = None if c.region is None else c.region[2] - c.region[0]
        return (c.design, c.period if c.family in ("blink", "shake") else None, side)

    for family in cases.FAMILIES:
        a, b = designs(cal, family), designs(held, family)
        assert a and b
        amplitudes_a, amplitudes_b = {c.amplitude for c in a}, {c.amplitude for c in b}
        differ_in_design = not {signature(c) for c in a} & {signature(c) for c in b}
        differ_in_amplitude = max(amplitudes_a) < min(amplitudes_b) or max(amplitudes_b) < min(amplitudes_a)
        assert differ_in_design or differ_in_amplitude, family
    for family in ("logo", "colour_cast", "background", "blink"):
        assert all(_hue(c.colour) < 0.5 for c in designs(cal, family))
        assert all(_hue(c.colour) >= 0.5 for c in designs(held, family))
    for family in cases.LOCAL_FAMILIES:  # calibration patches hug a corner, held-out ones sit inside the frame
        for c in designs(cal, family):
            x0, y0, x1, y1 = c.region
            assert min(x0, cases.SIZE - x1) <= 2 and min(y0, cases.SIZE - y1) <= 2
        for c in designs(held, family):
            assert min(c.region[:2]) >= 6 and cases.SIZE - max(c.region[2:]) >= 6


# ---------------------------------------------------------------- what each family renders


@pytest.mark.parametrize("split", cases.SPLITS)
@pytest.mark.parametrize("family", cases.LOCAL_FAMILIES)
def test_a_local_cue_changes_only_pixels_inside_its_region(family: str, split: str) -> None:
    stream = "appearance" if family == "logo" else "motion"
    cue = cue_of(family, split, stream=stream)
    rgb0, flow0 = render(())
    rgb1, flow1 = render((cue,))
    x0, y0, x1, y1 = cue.region
    outside = np.ones((cases.SIZE, cases.SIZE), bool)
    outside[y0:y1, x0:x1] = False
    assert not np.abs(rgb1 - rgb0)[:, :, outside].any()
    assert not np.abs(flow1 - flow0)[:, :, outside].any()
    assert np.abs(rgb1 - rgb0)[:, :, y0:y1, x0:x1].max() > 0.02
    if family != "logo":  # motion cues: strong flow inside the patch
        assert np.abs(flow1[:, :, y0:y1, x0:x1]).max() >= 1.5


def test_logo_is_static_with_zero_flow_on_its_glyph() -> None:
    cue = cue_of("logo")
    rgb, flow = render((cue,))
    x0, y0, x1, y1 = cue.region
    glyph = cases.glyph_mask(cue.design, x1 - x0)
    patch = rgb[:, :, y0:y1, x0:x1]
    assert np.allclose(patch[:, :, glyph], np.asarray(cue.colour)[:, None, None].clip(0, 1))
    assert not flow[:, :, y0:y1, x0:x1][:, :, glyph].any()


def test_blink_flow_is_a_vertical_wipe_at_each_switch_and_zero_otherwise() -> None:
    for split in cases.SPLITS:
        cue = cue_of("blink", split)
        _, flow = render((cue,))
        x0, y0, x1, y1 = cue.region
        on = cases.blink_states(cue)
        switch_on, switch_off = on[1:] & ~on[:-1], ~on[1:] & on[:-1]
        expected = cases.BLINK_FLOW_PX * (switch_on.astype(float) - switch_off)
        assert np.allclose(flow[1, :, y0:y1, x0:x1], expected[:, None, None])
        assert not flow[0, :, y0:y1, x0:x1].any()
        assert expected.any() and not expected.all() if split == "heldout" else expected.all()


def test_shake_moves_every_pixel() -> None:
    _, still = render(())
    _, jitter = render((cue_of("shake", "calibration", stream="motion"),))
    _, sway = render((cue_of("shake", "heldout", stream="motion"),))
    assert (np.hypot(*still) == 0).mean() > 0.5
    assert (np.hypot(*jitter) > 0).all()                      # every pixel of every frame
    assert (np.hypot(*sway) > 0).any(axis=0).all()            # every pixel in some frame


def test_global_static_cues_change_the_whole_frame_and_no_flow() -> None:
    rgb0, flow0 = render(())
    for split in cases.SPLITS:
        for family in ("colour_cast", "background"):
            rgb1, flow1 = render((cue_of(family, split),))
            assert np.array_equal(flow0, flow1)
            assert (np.abs(rgb1 - rgb0).max(axis=(0, 1)) > 0).mean() > 0.5, family
        border = cue_of("border", split)
        rgb1, flow1 = render((border,))
        mask = cases.border_mask(border)
        assert np.allclose(rgb1[:, :, mask], np.asarray(border.colour)[:, None, None])
        assert not flow1[:, :, mask].any() and np.array_equal(rgb1[:, :, ~mask], rgb0[:, :, ~mask])


def test_speed_cue_multiplies_the_shapes_speed_by_its_amplitude() -> None:
    for split in cases.SPLITS:
        cue = cue_of("speed", split, stream="motion")
        _, slow = render(())
        _, fast = render((cue,))
        assert np.abs(fast[0]).max() == pytest.approx(cue.amplitude * np.abs(slow[0]).max(), rel=1e-5)


def test_test_split_is_clean_and_train_split_differs_only_in_cued_classes() -> None:
    spec = dataclasses.replace(cases.case_specs("calibration", 2)[1], per_class_train=2)
    bare = dataclasses.replace(spec, cues=())
    test, test_bare = cases.generate_case_clips(spec, "test", 2), cases.generate_case_clips(bare, "test", 2)
    assert np.array_equal(test.rgb, test_bare.rgb) and np.array_equal(test.flow, test_bare.flow)
    train, train_bare = cases.generate_case_clips(spec, "train", 2), cases.generate_case_clips(bare, "train", 2)
    cued = [spec.class_names.index(c.class_name) for c in spec.cues]
    changed = np.abs(train.rgb - train_bare.rgb).reshape(len(train.labels), -1).max(axis=1) > 0
    assert np.array_equal(changed, np.isin(train.labels, cued))


# ---------------------------------------------------------------- models and cache


@pytest.mark.parametrize("index", [0, 1, 2])  # twostream_flatten, twostream_gap, c3d_single
def test_a_tiny_case_round_trips_through_the_cache(index: int, tmp_path: Path) -> None:
    spec = dataclasses.replace(cases.case_specs("heldout", 3)[index], **TINY)
    built = cases.build_case(spec, tmp_path)
    folder = cases.case_dir(spec, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["case.json", "weights.safetensors"]
    t0 = time.perf_counter()
    loaded = cases.build_case(spec, tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert loaded.from_cache and not built.from_cache
    assert loaded.spec == spec and loaded.manifest == built.manifest and loaded.confusion == built.confusion
    inputs = [torch.randn(2, *s.shape) for s in built.manifest.inputs]
    with torch.no_grad():
        assert torch.equal(built.module(*inputs), loaded.module(*inputs))
    assert not loaded.module.training and not any(p.requires_grad for p in loaded.module.parameters())


def test_cues_round_trip_through_json_with_their_locality() -> None:
    for spec in cases.case_specs("heldout", 4):
        for cue in spec.cues:
            raw = cue.to_json()
            assert raw["local"] == (cue.family in cases.LOCAL_FAMILIES) and raw["kind"] == cue.kind
            assert Cue.from_json(raw) == cue
        assert cases.CaseSpec.from_json(spec.to_json()) == spec


def test_manifests_name_the_streams_the_cues_are_planted_on() -> None:
    for spec in cases.case_specs("calibration", 3):
        manifest = cases.case_manifest(spec)
        names = [i.name for i in manifest.inputs]
        assert manifest.classes == spec.class_names
        if spec.architecture == "c3d_single":
            assert names == ["clip"] and manifest.inputs[0].modality == "rgb" and manifest.inputs[0].layout == "NCTHW"
        else:
            assert names == ["appearance", "motion"]
            assert manifest.architecture_kwargs["head"] == spec.architecture.removeprefix("twostream_")
        assert {c.stream for c in spec.cues} <= set(names)


@pytest.mark.slow
def test_a_trained_case_confuses_its_planted_pairs_more_than_its_clean_pairs() -> None:
    torch.set_num_threads(1)
    spec = dataclasses.replace(cases.case_specs("calibration", 1)[0], per_class_train=120, epochs=12)
    case = cases.train_case(spec)
    # At this reduced training size one cue may not be picked up on every CPU (float results differ between
    # AVX2 and AVX-512 kernels: case 0's logo reached a 0.2 rate on one machine); all but one must be.
    learned = [
        cue
        for cue in spec.cues
        if case.rate(cue.class_name, cue.partner) > case.rate(cue.partner, cue.class_name) + 0.3
        and case.cue_learned(cue)
    ]
    assert len(learned) >= len(spec.cues) - 1, [c.family for c in spec.cues if c not in learned]
    planted = np.mean(list(case.planted_confusion().values()))
    assert planted > np.mean(list(case.clean_confusion().values())) + 0.3


# ---------------------------------------------------------------- scoring


LOGO = Cue("logo", "A", "B", "appearance", (2, 2, 7, 7), "bars", (1.0, 0.0, 0.0), 1.0)
SHAKE = Cue("shake", "C", "D", "motion", None, "jitter", (0.0, 0.0, 0.0), 1.2)


def flag(code: str, stream: str | None, cls: str | None = None, peak=None, severity: str = "medium") -> FlagRecord:
    return FlagRecord(code, stream, severity, peak, cls)


def test_a_cue_is_found_by_a_flag_about_its_class_on_its_stream() -> None:
    assert scoring.cue_found([flag("APPEARANCE_ONLY_SEPARATION", "appearance", "A")], LOGO)
    assert scoring.cue_found([flag("LOCALIZED_CUE", "appearance", None)], LOGO)
    assert not scoring.cue_found([flag("APPEARANCE_ONLY_SEPARATION", "appearance", "B")], LOGO)
    assert not scoring.cue_found([flag("MOTION_ONLY_SEPARATION", "motion", "A")], LOGO)
    assert not scoring.cue_found([flag("WEAK_VISUALISATION", None, "A"), flag("SHARED_EVIDENCE", None)], LOGO)
    assert not scoring.cue_found([flag("LOCALIZED_CUE", "appearance", "A")], LOGO, code="CONTEXT_CUE")


def test_on_the_single_stream_net_the_kind_of_evidence_must_match_the_cue() -> None:
    logo, shake = dataclasses.replace(LOGO, stream="clip"), dataclasses.replace(SHAKE, stream="clip")
    still, moving = flag("APPEARANCE_ONLY_SEPARATION", "clip", "A"), flag("MOTION_ONLY_SEPARATION", "clip", "C")
    assert scoring.cue_found([still], logo) and not scoring.cue_found([moving], logo)
    assert scoring.cue_found([moving], shake) and not scoring.cue_found([flag("CONTEXT_CUE", "clip", "C")], shake)
    assert scoring.cue_found([flag("LOCALIZED_CUE", "clip", "C")], shake)     # LOCALIZED_CUE says no kind


def test_localised_needs_a_localized_cue_within_one_window_of_the_region() -> None:
    # region (2, 2, 7, 7) of 32 px: x, y in [0.0625, 0.21875]; one window = 0.125
    assert scoring.peak_near_region((0.34, 0.0), LOGO.region)
    assert not scoring.peak_near_region((0.35, 0.1), LOGO.region)
    assert not scoring.peak_near_region((0.1, 0.36), LOGO.region)
    near = flag("LOCALIZED_CUE", "appearance", "B", (0.3, 0.1))
    far = flag("LOCALIZED_CUE", "appearance", "A", (0.8, 0.8))
    assert scoring.cue_localised([far, near], LOGO, "twostream_flatten") is True
    assert scoring.cue_localised([far], LOGO, "c3d_single") is False
    assert scoring.cue_localised([near], LOGO, "twostream_gap") is None        # position pooled away
    assert scoring.cue_localised([near], SHAKE, "twostream_flatten") is None   # a global cue
    wrong_stream = flag("LOCALIZED_CUE", "motion", "A", (0.1, 0.1))
    assert scoring.cue_localised([wrong_stream], LOGO, "twostream_flatten") is False


def test_found_as_expected_needs_an_expected_code() -> None:
    context = [flag("CONTEXT_CUE", "clip", None)]
    on_clip = dataclasses.replace(LOGO, stream="clip")
    assert scoring.cue_found(context, on_clip)                                   # static evidence, its stream
    assert not scoring.cue_found_as_expected(context, on_clip, "c3d_single")     # but CONTEXT_CUE is not expected
    assert scoring.cue_found_as_expected([flag("LOCALIZED_CUE", "clip", "A", (0.1, 0.1))], on_clip, "c3d_single")


def test_expected_codes_follow_the_table() -> None:
    assert scoring.expected_codes(LOGO, "twostream_flatten") == ["LOCALIZED_CUE", "APPEARANCE_ONLY_SEPARATION"]
    assert scoring.expected_codes(LOGO, "twostream_gap") == ["APPEARANCE_ONLY_SEPARATION"]
    assert scoring.expected_codes(SHAKE, "c3d_single") == ["MOTION_ONLY_SEPARATION"]
    assert scoring.expected_codes(SHAKE, "twostream_gap") == ["MOTION_ONLY_SEPARATION", "MOTION_FACTOR_CUE"]
    cast = dataclasses.replace(SHAKE, family="colour_cast", stream="clip")
    assert scoring.expected_codes(cast, "c3d_single") == ["GLOBAL_APPEARANCE_CUE", "APPEARANCE_ONLY_SEPARATION",
                                                          "STATIC_FACTOR_CUE"]
    background = dataclasses.replace(SHAKE, family="background", stream="clip")
    assert scoring.expected_codes(background, "c3d_single") == ["APPEARANCE_ONLY_SEPARATION", "CONTEXT_CUE",
                                                                "STATIC_FACTOR_CUE"]


def test_code_rates_count_fired_correct_expected_and_found_by_hand() -> None:
    outcomes = [
        PairOutcome("c1", "twostream_flatten", "A", "B", LOGO, (
            flag("LOCALIZED_CUE", "appearance", "A", (0.1, 0.1)),          # correct, found (expected)
            flag("APPEARANCE_ONLY_SEPARATION", "appearance", "B"),        # wrong class: fired, not correct
            flag("WEAK_VISUALISATION", None, "A"))),                      # not a finding: left out
        PairOutcome("c1", "twostream_flatten", "C", "D", SHAKE, (
            flag("MOTION_ONLY_SEPARATION", "motion", None),                # correct, found (expected)
            flag("SHARED_EVIDENCE", None))),                               # never correct
        PairOutcome("c1", "twostream_flatten", "E", "F", None, (
            flag("MOTION_ONLY_SEPARATION", "motion", "E", severity="high"),  # a clean pair: wrong
            flag("WEAK_VISUALISATION", None))),
    ]
    rates = scoring.code_rates(outcomes)
    assert set(rates) == {"LOCALIZED_CUE", "APPEARANCE_ONLY_SEPARATION", "MOTION_ONLY_SEPARATION", "SHARED_EVIDENCE",
                          "MOTION_FACTOR_CUE"}                         # expected of the shake, never fired
    assert rates["MOTION_FACTOR_CUE"] == {"precision": None, "recall": 0.0, "fired": 0, "correct": 0, "expected": 1,
                                          "found": 0}
    assert rates["LOCALIZED_CUE"] == {"precision": 1.0, "recall": 1.0, "fired": 1, "correct": 1, "expected": 1,
                                      "found": 1}
    assert rates["APPEARANCE_ONLY_SEPARATION"] == {"precision": 0.0, "recall": 0.0, "fired": 1, "correct": 0,
                                                   "expected": 1, "found": 0}
    assert rates["MOTION_ONLY_SEPARATION"] == {"precision": 0.5, "recall": 1.0, "fired": 2, "correct": 1,
                                               "expected": 1, "found": 1}
    assert rates["SHARED_EVIDENCE"]["precision"] == 0.0 and rates["SHARED_EVIDENCE"]["recall"] is None
    recall = scoring.family_recall(outcomes)
    assert recall["logo"] == {"total": 1, "found": 1, "expected_total": 1, "as_expected": 1, "local_total": 1,
                              "localised": 1}
    assert recall["shake"] == {"total": 1, "found": 1, "expected_total": 1, "as_expected": 1, "local_total": 0,
                               "localised": 0}
    assert scoring.clean_pair_flags(outcomes) == {"pairs": 1, "per_code": {"MOTION_ONLY_SEPARATION": 1}, "high": 1,
                                                  "pairs_with_any": 1}
    table = scoring.code_family_table(outcomes)
    assert table["APPEARANCE_ONLY_SEPARATION"]["logo"] == {"total": 1, "any": 1, "right": 0}
    assert table["MOTION_ONLY_SEPARATION"]["shake"] == {"total": 1, "any": 1, "right": 1}


def test_flag_records_read_flag_json_and_flag_objects_alike() -> None:
    from workers.audit.flags import Flag

    f = Flag("LOCALIZED_CUE", "motion", "high", "msg", (0.25, 0.75), "A")
    assert FlagRecord.of(f) == FlagRecord.of(f.to_json()) == FlagRecord("LOCALIZED_CUE", "motion", "high",
                                                                        (0.25, 0.75), "A")
