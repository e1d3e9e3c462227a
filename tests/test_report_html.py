"""Tests of the HTML report renderer (workers.audit.report_html): content, escaping, offline-ness, live hooks."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_report import SAMPLE_CLASSES, build_sample_report
from workers.audit.report_html import render_confusion_heatmap, render_report_html, write_report

HOSTILE_CLASS = '<script>alert("x")</script>Jump'


class _Elements(HTMLParser):
    """Collects (tag, attrs, ancestors) of every start tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), tuple(self._open)))
        if tag not in {"img", "source", "meta", "link", "input", "br", "hr"}:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass


def elements(html: str, tag: str | None = None) -> list[tuple[str, dict[str, str | None], tuple[str, ...]]]:
    parser = _Elements()
    parser.feed(html)
    return [e for e in parser.elements if tag is None or e[0] == tag]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("report")
    return out, build_sample_report(out)


@pytest.fixture
def report(sample_dir: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(sample_dir[1])


def test_report_shows_every_pair_and_every_flag_message(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    for pair in report["pairs"]:
        section = re.search(rf'<section class="pair card" id="pair-{pair["rank"]}".*?</section>', html, re.S)
        assert section, f"no section for pair {pair['rank']}"
        assert pair["a"] in section.group(0) and pair["b"] in section.group(0)
        assert f'href="#pair-{pair["rank"]}"' in html
        for flag in pair["flags"]:
            assert flag["message"] in section.group(0)
            assert flag["code"] in section.group(0)
    assert "Same camera pan in both classes." in html  # a flag's review
    assert 'id="flag-17"' in html and 'href="#flag-17"' in html  # flags with an id are anchored by it
    assert 'id="pair-2-flag-0"' in html
    assert "82%" in html and "(41" in html  # a_as_b rate and count in the summary


def test_report_has_no_external_urls_and_no_scripts(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    assert not re.search(r"""(?:src|href|poster|action)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    for tag, attrs, _ in elements(html):
        for name in ("src", "href", "poster", "action"):
            value = attrs.get(name) or ""
            assert not value.lower().startswith(("http://", "https://", "//")), (tag, name, value)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()  # the stylesheet is inlined
    assert "<style>" in html and ".stream__grid" in html


def test_class_name_with_script_tag_is_escaped_in_page_and_heatmap(tmp_path: Path) -> None:
    classes = list(SAMPLE_CLASSES)
    classes[0] = HOSTILE_CLASS
    report = build_sample_report(tmp_path, classes=classes)
    page = write_report(report, tmp_path)
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;Jump" in html
    assert (tmp_path / "confusion.png").is_file()


def test_write_report_writes_page_and_confusion_heatmap_whose_links_resolve(tmp_path: Path) -> None:
    report = build_sample_report(tmp_path)
    page = write_report(report, tmp_path)
    assert page == tmp_path / "index.html"
    with Image.open(tmp_path / "confusion.png") as heatmap:
        assert heatmap.format == "PNG" and min(heatmap.size) > 300
    html = page.read_text(encoding="utf-8")
    linked = {attrs[name] for _, attrs, _ in elements(html) for name in ("src", "href", "poster")
              if attrs.get(name) and not attrs[name].startswith("#")}
    assert "confusion.png" in linked
    missing = sorted(rel for rel in linked if not (tmp_path / rel).is_file())
    assert missing == []


def test_each_clip_is_a_looping_muted_video_with_gif_fallback_labelled_by_kappa(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    videos = elements(html, "video")
    clips = [c for p in report["pairs"] for per_class in p["artifacts"]["clips"].values()
             for per_stream in per_class.values() for c in per_stream]
    assert len(videos) == sum(1 for c in clips if "mp4" in c)
    for _, attrs, _ in videos:
        assert {"autoplay", "loop", "muted", "playsinline"} <= attrs.keys()
        assert attrs["poster"].endswith(".gif")
        assert attrs["aria-label"]
    sources = elements(html, "source")
    assert all(a["type"] == "video/mp4" and a["src"].endswith(".mp4") and "video" in anc for _, a, anc in sources)
    fallbacks = [a for _, a, anc in elements(html, "img") if "video" in anc]
    assert len(fallbacks) == len(videos) and all(a["src"].endswith(".gif") and a["alt"] for a in fallbacks)
    for kappa in ("0.0", "1.0", "4.0"):
        assert f"κ = {kappa}" in html


def test_clip_without_mp4_is_shown_as_gif_alone(report: dict[str, Any]) -> None:
    gif_only = report["pairs"][1]["artifacts"]["clips"][SAMPLE_CLASSES[3]]["appearance"][-1]
    assert "mp4" not in gif_only
    html = render_report_html(report)
    imgs = [(a, anc) for _, a, anc in elements(html, "img") if a["src"] == gif_only["gif"]]
    assert imgs and any("video" not in anc for _, anc in imgs)
    assert all(a["alt"] for a, _ in imgs)


def test_difference_map_has_peak_marker_at_normalised_position(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    assert 'style="left:15.00%;top:14.00%"' in html  # pair 1, appearance: the LOCALIZED_CUE flag's peak
    assert 'class="marker marker--high"' in html
    # the "strongest difference" marker sits at the difference map's own peak, not at the cue window
    assert 'style="left:85.00%;top:86.00%"' in html
    assert "strongest difference at x=0.85, y=0.86" in html
    diff_imgs = [a for _, a, _ in elements(html, "img") if "difference_" in a["src"]]
    assert len(diff_imgs) == 2 * len(report["pairs"])
    assert all(a["alt"].startswith("Difference map between") for a in diff_imgs)


def test_known_scores_get_labels_and_unknown_numeric_scores_still_render(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    assert "feature similarity" in html and "cross-act. a on b" in html and "stream reliance" in html
    assert "flow energy ratio" in html and "1.74" in html  # a per-stream score the template does not know
    assert "calibration · temperature" in html and "1.3" in html  # an unknown top-level score


def test_missing_or_malformed_scores_and_artifacts_do_not_crash(report: dict[str, Any]) -> None:
    pair = report["pairs"][0]
    pair["scores"] = {"appearance": {"cross_activation": "n/a", "peak_xy": [0.5]}, "motion": None,
                      "stream_reliance": {pair["a"]: {"appearance": float("nan")}}}
    pair["artifacts"] = {"clips": {pair["a"]: {"appearance": [{"level": 0}]}}}
    pair["flags"] = [{"code": "CONTEXT_CUE"}]
    del pair["confusion"]
    report["pairs"].append({"a": "Lonely", "b": "Pair"})
    html = render_report_html(report)
    assert "CONTEXT_CUE" in html and "no clip" in html and "No difference map." in html
    assert 'id="pair-4"' in html and "Lonely" in html


def test_minimal_report_without_confusion_renders_and_writes_no_heatmap(tmp_path: Path) -> None:
    page = write_report({"audit": {"id": "empty"}, "pairs": []}, tmp_path)
    html = page.read_text(encoding="utf-8")
    assert "empty" in html and "No pairs were audited." in html
    assert "confusion.png" not in html and not (tmp_path / "confusion.png").exists()


def test_static_report_has_no_progress_bar_and_no_review_forms(report: dict[str, Any]) -> None:
    html = render_report_html(report)
    assert "<progress" not in html and "<form" not in html and "http-equiv" not in html


def test_live_context_adds_progress_bar_and_review_form_per_flag_with_an_id(report: dict[str, Any]) -> None:
    html = render_report_html(
        report,
        live={"progress": 0.4, "status": "running", "message": "visualising 12/30", "refresh_s": 5},
        review_url_for=lambda flag: f"/audits/a1/flags/{flag['id']}/review" if "id" in flag else None,
        review_form_fields={"csrf": "t0k-en_1"},
    )
    progress = elements(html, "progress")
    assert len(progress) == 1 and float(progress[0][1]["value"]) == pytest.approx(0.4)
    assert "Audit running: 40%" in html and "visualising 12/30" in html
    assert '<meta http-equiv="refresh" content="5">' in html
    forms = elements(html, "form")
    assert [f[1]["action"] for f in forms] == ["/audits/a1/flags/17/review", "/audits/a1/flags/18/review"]
    assert all(f[1]["method"] == "post" for f in forms)
    hidden = [a for _, a, _ in elements(html, "input") if a.get("type") == "hidden"]
    assert [(a["name"], a["value"]) for a in hidden] == [("csrf", "t0k-en_1")] * len(forms)
    radios = [a for _, a, _ in elements(html, "input") if a.get("name") == "verdict"]
    assert {a["value"] for a in radios} == {"confirmed", "dismissed", "needs-data"}
    assert sum("checked" in a for a in radios) == 1  # flag 18 was reviewed as confirmed


def test_asset_url_maps_every_artifact_and_the_heatmap(report: dict[str, Any]) -> None:
    html = render_report_html(report, asset_url=lambda rel: f"/artifacts/a1/{rel}")
    urls = [a[name] for _, a, _ in elements(html) for name in ("src", "poster") if a.get(name)]
    assert urls and all(u.startswith("/artifacts/a1/") for u in urls)
    assert "/artifacts/a1/confusion.png" in urls


def test_artifact_paths_that_are_not_relative_are_not_linked(report: dict[str, Any]) -> None:
    clip = report["pairs"][0]["artifacts"]["clips"][report["pairs"][0]["a"]]["appearance"][0]
    clip["gif"] = "https://cdn.example.com/clip.gif"
    clip["mp4"] = "javascript:alert(1)"
    clip["png"] = "//cdn.example.com/strip.png"
    html = render_report_html(report)
    assert "cdn.example.com" not in html and "javascript:" not in html


def _outline_pixels(path: Path) -> int:
    """Pixels in the outline colour (#ea580c), which the heat map's own colours never reach."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array([0xEA, 0x58, 0x0C])).sum(axis=2) < 40).sum())


def test_confusion_heatmap_outlines_both_cells_of_each_audited_pair(tmp_path: Path) -> None:
    confusion = {"classes": ["a", "b", "c", "d"], "matrix": [[9, 3, 0, 0], [2, 9, 0, 0], [0, 0, 9, 1], [0, 0, 1, 9]]}
    none = _outline_pixels(render_confusion_heatmap(confusion, [], tmp_path / "none.png"))
    one = _outline_pixels(render_confusion_heatmap(confusion, [{"a": "a", "b": "b"}], tmp_path / "one.png"))
    two = _outline_pixels(render_confusion_heatmap(confusion, [{"a": "a", "b": "b"}, {"a": "c", "b": "d"}],
                                                   tmp_path / "two.png"))
    assert none == 0
    assert one > 100  # two outlined cells
    assert 1.6 < two / one < 2.4  # four outlined cells of the same size


def test_confusion_heatmap_scales_to_many_classes_and_skips_unknown_pairs(tmp_path: Path) -> None:
    k = 40
    classes = [f"class_{i:02d}$" for i in range(k)]
    matrix = [[(10 if i == j else (i * j) % 3) for j in range(k)] for i in range(k)]
    path = render_confusion_heatmap({"classes": classes, "matrix": matrix},
                                    [{"a": "class_01$", "b": "class_02$"}, {"a": "unknown", "b": "class_03$"}],
                                    tmp_path / "cm.png")
    with Image.open(path) as image:
        assert image.size[0] > 1000
    assert _outline_pixels(path) > 0


def test_confusion_heatmap_rejects_a_matrix_that_does_not_match_the_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render_confusion_heatmap({"classes": ["a", "b"], "matrix": [[1, 2, 3]]}, [], tmp_path / "cm.png")
