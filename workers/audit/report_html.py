"""Renders one audit's report (the DESIGN 3.4 dict) as an HTML page, and writes the static report folder.

One Jinja2 template (``templates/report.html``) serves both the offline report written by
:func:`write_report` and the live page of the service, which passes a ``live`` progress context and a
``review_url_for`` callable (and the hidden fields its forms carry). The report dict is turned into a complete,
normalised view first, so the template never meets a missing key and scores the scoring module adds later still show up.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import numpy as np
from markupsafe import Markup

from workers.audit.flag_rates import rate_sentence
from workers.engine.files import atomic_write, write_bytes_atomic

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).with_name("templates")
STYLESHEET = Path(__file__).with_name("static") / "report.css"
CONFUSION_PNG = "confusion.png"
ANNOTATE_MAX_CLASSES = 20  # counts are written into the heat map's cells up to this many classes
TABLE_MAX_CLASSES = 30  # the matrix is also given as an HTML table (for screen readers) up to this many
REVIEW_VERDICTS = ("confirmed", "dismissed", "needs-data")
SEVERITIES = ("high", "medium", "low")
DEFAULT_STREAMS = ({"name": "appearance", "modality": "rgb"}, {"name": "motion", "modality": "flow"})
MODALITY_LABELS = {"rgb": "RGB frames", "flow": "optical flow"}

AssetUrl = Callable[[str], str]
ReviewUrlFor = Callable[[Mapping[str, Any]], "str | None"]

# Per-stream scores shown first and with readable labels; any other numeric entry follows, labelled by its key.
KNOWN_STREAM_SCORES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("cross_activation", "a_on_b"), "cross-act. a on b",
     "Cross-activation between a's and b's visualisations, a on b (DESIGN 4.4)."),
    (("cross_activation", "b_on_a"), "cross-act. b on a",
     "Cross-activation between a's and b's visualisations, b on a (DESIGN 4.4)."),
    (("feature_similarity",), "feature similarity",
     "Cosine similarity of the penultimate features of a's and b's visualisations."),
    (("separation_margin",), "separation margin", "How far apart the model keeps a's and b's visualisations."),
    (("difference_concentration",), "diff. concentration",
     "Share of the consistent a-b difference in the top 5% of pixels."),
    (("difference_peak_xy",), "diff. peak (x, y)", "Normalised position of the strongest consistent difference."),
    (("separation_share",), "stream's share", "This stream's share of the pair's separation (whole-stream swaps)."),
    (("whole_stream_drop",), "whole-stream swap",
     "Share of the a-b margin lost when this stream is swapped for the other class's whole."),
    (("peak_xy",), "cue window (x, y)",
     "Centre of the window that holds the most of one class's margin in this stream (occlusion scan)."),
    (("peak_drop",), "cue window swap", "Share of that class's margin lost when only that window is swapped."),
    (("peak_share",), "cue window share", "That loss as a share of the class's whole-stream swap."),
    (("peak_separation",), "cue window stands out",
     "That window's loss divided by the strongest window elsewhere in the frame."),
)
# Per-class scores ({class: {stream: value}}) shown under each class's clips.
KNOWN_CLASS_SCORES: tuple[tuple[str, str, str], ...] = (
    ("stream_reliance", "stream reliance", "Share of the class logit lost when this stream is neutralised."),
    ("stream_evidence", "margin, stream alone",
     "The class's logit margin over the other class of the pair with only this stream (the others neutral)."),
    ("speed_invariance", "speed invariance", "Similarity of the class's visualisations across kappa levels."),
)


# --------------------------------------------------------------------------------------------- public API

def render_report_html(
    report: Mapping[str, Any],
    *,
    live: Mapping[str, Any] | None = None,
    review_url_for: ReviewUrlFor | None = None,
    review_form_fields: Mapping[str, str] | None = None,
    asset_url: AssetUrl = lambda rel: rel,
) -> str:
    """Render the report page for ``report`` (DESIGN 3.4) and return the HTML text.

    ``live``: ``{"progress": 0..1, "status": str, "message"?: str, "refresh_s"?: int}`` adds a progress bar
    (and, with ``refresh_s``, a meta refresh) for the service's page of a running audit.
    ``review_url_for(flag)``: the URL a flag's review form posts to, or None for no form; without it
    (the static report) no forms are rendered. ``review_form_fields``: hidden fields every review form
    posts in its body (the service's CSRF token, which must not go into a URL). ``asset_url(rel)``: maps an
    artifact path of the report, and ``confusion.png``, to the URL the page uses; relative paths by default.
    The stylesheet is inlined, so the page needs no other file than its images and clips. Artifact paths that
    are absolute URLs (with a scheme or a host) are not linked.
    """
    view = build_report_view(report, live=live, review_url_for=review_url_for,
                             review_form_fields=review_form_fields, asset_url=asset_url)
    return _template_environment().get_template("report.html").render(view=view, css=_stylesheet())


def write_report(report: Mapping[str, Any], out_dir: Path) -> Path:
    """Write the static report into ``out_dir``: ``index.html`` and ``confusion.png``; return the page's path.

    Artifact paths in ``report`` are relative to ``out_dir`` (the clips are expected to be there already),
    so the folder opens offline from ``file://``. Files are written to a temporary name and renamed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audit_id = _as_mapping(report.get("audit")).get("id", "?")
    missing = [rel for rel in _artifact_paths(report) if not (out_dir / rel).is_file()]
    if missing:
        log.warning("audit %s: %d artifact file(s) missing from %s, e.g. %s",
                    audit_id, len(missing), out_dir, missing[0])
    confusion = _as_mapping(_as_mapping(report.get("audit")).get("confusion"))
    if _confusion_matrix(confusion) is not None:
        render_confusion_heatmap(confusion, _as_list(report.get("pairs")), out_dir / CONFUSION_PNG)
    html = render_report_html(report)
    page = out_dir / "index.html"
    write_bytes_atomic(page, html.encode("utf-8"))
    log.info("audit %s: report written to %s", audit_id, page)
    return page


def render_confusion_heatmap(
    confusion: Mapping[str, Any], pairs: Sequence[Mapping[str, Any]], path: Path
) -> Path:
    """Draw the confusion matrix (rows true, columns predicted) as a PNG heat map at ``path``.

    Cells are coloured by row-normalised rate, counts are written in the cells when there are at most
    ``ANNOTATE_MAX_CLASSES`` classes, and both cells of every audited pair are outlined. Uses the Agg
    canvas directly (no pyplot, no global backend switch). Raises ``ValueError`` on a malformed matrix.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    matrix = _confusion_matrix(confusion)
    if matrix is None:
        raise ValueError("confusion needs 'classes' and a square 'matrix' of non-negative counts of that size")
    classes = [str(c) for c in confusion["classes"]]
    k = len(classes)
    support = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)

    side = float(np.clip(2.2 + 0.42 * k, 4.5, 26.0))
    label_size = float(np.clip(11.0 - 0.06 * k, 5.0, 10.0))
    fig = Figure(figsize=(side + 1.4, side), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    labels = [c.replace("$", r"\$") for c in classes]  # a "$" would start matplotlib mathtext
    ax.set_xticks(range(k), labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=label_size)
    ax.set_yticks(range(k), labels, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(length=0)
    if k <= ANNOTATE_MAX_CLASSES:
        count_size = float(np.clip(10.0 - 0.2 * k, 6.0, 9.0))
        for i in range(k):
            for j in range(k):
                count = matrix[i, j]
                ax.text(j, i, f"{count:g}", ha="center", va="center", fontsize=count_size,
                        color="white" if rates[i, j] > 0.55 else "#1f2937")
    index = {name: i for i, name in enumerate(classes)}
    for pair in pairs:
        a, b = index.get(str(pair.get("a"))), index.get(str(pair.get("b")))
        if a is None or b is None:
            continue
        for row, col in ((a, b), (b, a)):
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#ea580c",
                                   linewidth=2.2))
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("share of the true class (row)")
    ax.set_title("Confusion matrix · audited pairs outlined", fontsize=11)

    return atomic_write(Path(path), lambda handle: fig.savefig(handle, format="png"))


def build_report_view(
    report: Mapping[str, Any],
    *,
    live: Mapping[str, Any] | None = None,
    review_url_for: ReviewUrlFor | None = None,
    review_form_fields: Mapping[str, str] | None = None,
    asset_url: AssetUrl = lambda rel: rel,
) -> dict[str, Any]:
    """Normalise ``report`` into the complete view the template renders (every key present, values formatted).

    Exposed for tests and for the service, which may want the same view as JSON-free context.
    """
    audit = _as_mapping(report.get("audit"))
    streams = _streams(audit, report)
    levels = {int(lv["index"]): lv.get("kappa") for lv in _as_list(audit.get("levels"))
              if isinstance(lv, Mapping) and isinstance(lv.get("index"), int)}

    def url(rel: Any) -> str | None:
        return _asset(rel, asset_url)

    confusion = _as_mapping(audit.get("confusion"))
    matrix = _confusion_matrix(confusion)
    pairs = [_pair_view(p, i, streams, levels, url, review_url_for)
             for i, p in enumerate(_as_list(report.get("pairs"))) if isinstance(p, Mapping)]
    model = _as_mapping(audit.get("model"))
    title_model = " ".join(str(model[k]) for k in ("name", "version") if model.get(k) not in (None, ""))
    return {
        "title": f"QuirkScope audit {audit.get('id', '')}".strip() + (f" · {title_model}" if title_model else ""),
        "audit": {
            "id": _text(audit.get("id")),
            "status": _text(audit.get("status")),
            "model_name": _text(model.get("name")),
            "model_version": _text(model.get("version")),
            "model_sha256": _text(model.get("sha256")),
            "model_sha256_short": _text(model.get("sha256"))[:12],
            "timings": [{"key": k,
                         "label": "model evaluations" if k == "cost" else k.removesuffix("_s").replace("_", " "),
                         "value": _fmt_timing(k, v)}
                        for k, v in _as_mapping(audit.get("timings")).items()],
            "options": [{"key": str(k), "value": _fmt_option(v)}
                        for k, v in _as_mapping(audit.get("options")).items()],
            "n_classes": len(_as_list(audit.get("classes"))) or (len(matrix) if matrix is not None else 0),
            "streams": streams,
            "levels": [{"index": i, "kappa": _fmt(k)} for i, k in sorted(levels.items())],
        },
        "confusion": _confusion_view(confusion, matrix, report, url),
        "pairs": pairs,
        "n_flags": sum(len(p["flags"]) for p in pairs),
        "live": _live_view(live),
        "reviews_enabled": review_url_for is not None,
        "review_form_fields": [{"name": str(k), "value": str(v)} for k, v in (review_form_fields or {}).items()],
        "review_verdicts": REVIEW_VERDICTS,
    }


# ------------------------------------------------------------------------------------------- view parts

def _pair_view(pair: Mapping[str, Any], position: int, streams: list[dict[str, str]], levels: dict[int, Any],
               url: Callable[[Any], str | None], review_url_for: ReviewUrlFor | None) -> dict[str, Any]:
    a, b = _text(pair.get("a")), _text(pair.get("b"))
    rank = pair.get("rank") if isinstance(pair.get("rank"), int) else position + 1
    anchor = f"pair-{rank}"
    confusion = _as_mapping(pair.get("confusion"))
    counts = [c for c in _as_list(confusion.get("counts")) if _is_number(c)]
    flags = [_flag_view(f, f"flag-{f['id']}" if f.get("id") is not None else f"{anchor}-flag-{i}", review_url_for)
             for i, f in enumerate(_as_list(pair.get("flags"))) if isinstance(f, Mapping)]
    flags.sort(key=lambda f: SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else len(SEVERITIES))
    scores = _as_mapping(pair.get("scores"))
    artifacts = _as_mapping(pair.get("artifacts"))
    clips = _as_mapping(artifacts.get("clips"))
    differences = _as_mapping(artifacts.get("difference"))
    stream_names = {s["name"] for s in streams}
    class_score_keys = [k for k, v in scores.items() if k not in stream_names and _is_per_class(v, a, b)]

    rows = []
    for stream in streams:
        name = stream["name"]
        stream_scores = _as_mapping(scores.get(name))
        cells = []
        for role, cls in (("a", a), ("b", b)):
            cells.append({
                "role": role,
                "cls": cls,
                "clips": [_clip_view(c, cls, stream, levels, url)
                          for c in _as_list(_as_mapping(clips.get(cls)).get(name)) if isinstance(c, Mapping)],
                "scores": _class_scores(scores, class_score_keys, cls, name),
            })
        difference = _as_mapping(differences.get(name))
        rows.append({
            "stream": stream,
            "cells": cells,
            "difference": {
                "png": url(difference.get("png")),
                "npy": url(difference.get("npy")),
                "alt": f"Difference map between {a} and {b}, {name} stream"
                       + (f", strongest at x={_fmt(stream_scores['difference_peak_xy'][0])}, "
                          f"y={_fmt(stream_scores['difference_peak_xy'][1])}"
                          if _xy(stream_scores.get("difference_peak_xy")) else ""),
                "markers": _markers(stream_scores, [f for f in flags if f["stream"] == name]),
            },
            "scores": _stream_scores(stream_scores),
        })
    other = [row for key, value in scores.items() if key not in stream_names and key not in class_score_keys
             for row in _numeric_rows(value, (key,))]
    return {
        "a": a, "b": b, "rank": rank, "anchor": anchor,
        "explicit": bool(pair.get("explicit")),
        "a_as_b": _fmt_rate(confusion.get("a_as_b")),
        "b_as_a": _fmt_rate(confusion.get("b_as_a")),
        "count_a_as_b": _fmt(counts[0]) if len(counts) > 0 else "",
        "count_b_as_a": _fmt(counts[1]) if len(counts) > 1 else "",
        "flags": flags,
        "rows": rows,
        "other_scores": other,
    }


def _flag_view(flag: Mapping[str, Any], dom_id: str, review_url_for: ReviewUrlFor | None) -> dict[str, Any]:
    severity = _text(flag.get("severity")).lower() or "info"
    peak = _xy(flag.get("peak_xy"))
    review = flag.get("review")
    review_view = None
    if isinstance(review, Mapping) and review.get("verdict"):
        review_view = {k: _text(review.get(k)) for k in ("verdict", "note", "by", "at")}
    review_url = None
    if review_url_for is not None:
        target = review_url_for(flag)
        review_url = str(target) if target else None
    return {
        "dom_id": dom_id,
        "id": _text(flag.get("id")),
        "code": _text(flag.get("code")) or "FLAG",
        "stream": _text(flag.get("stream")),
        "severity": severity,
        "severity_class": severity if severity in SEVERITIES else "info",
        "message": _text(flag.get("message")),
        "benchmark": rate_sentence(flag.get("benchmark")) if isinstance(flag.get("benchmark"), Mapping) else "",
        "peak": f"x={_fmt(peak[0])}, y={_fmt(peak[1])}" if peak else "",
        "peak_xy": peak,
        "review": review_view,
        "review_url": review_url,
    }


def _clip_view(clip: Mapping[str, Any], cls: str, stream: Mapping[str, str], levels: dict[int, Any],
               url: Callable[[Any], str | None]) -> dict[str, Any]:
    index = clip.get("level")
    kappa = clip.get("kappa", levels.get(index) if isinstance(index, int) else None)
    kappa_text = _fmt(kappa) if _is_number(kappa) else "?"
    return {
        "label": f"κ = {kappa_text}",
        "level": _text(index),
        "seed": _text(clip.get("seed")),
        "gif": url(clip.get("gif")),
        "mp4": url(clip.get("mp4")),
        "png": url(clip.get("png")),
        "npy": url(clip.get("npy")),
        "alt": f"{cls}, {stream['name']} stream ({stream['modality_label']}), "
               f"visualisation at kappa {kappa_text}",
    }


def _stream_scores(stream_scores: Mapping[str, Any]) -> list[dict[str, str]]:
    rows, shown = [], set()
    for path, label, help_text in KNOWN_STREAM_SCORES:
        value = _dig(stream_scores, path)
        if value is None:
            continue
        shown.add(path)
        text = _fmt_xy(value) if path[-1].endswith("_xy") else _fmt(value) if _is_number(value) else None
        if text is not None:
            rows.append({"label": label, "value": text, "help": help_text})
    for row in _numeric_rows(stream_scores, ()):
        if row["path"] not in shown:
            rows.append(row)
    return rows


def _class_scores(scores: Mapping[str, Any], keys: list[str], cls: str, stream: str) -> list[dict[str, str]]:
    helps = {key: (label, help_text) for key, label, help_text in KNOWN_CLASS_SCORES}
    ordered = [k for k, _, _ in KNOWN_CLASS_SCORES if k in keys] + [k for k in keys if k not in helps]
    rows = []
    for key in ordered:
        value = _as_mapping(_as_mapping(scores.get(key)).get(cls)).get(stream)
        if _is_number(value):
            label, help_text = helps.get(key, (key.replace("_", " "), ""))
            rows.append({"label": label, "value": _fmt(value), "help": help_text})
    return rows


def _markers(stream_scores: Mapping[str, Any], flags: list[dict[str, Any]]) -> list[dict[str, str]]:
    markers: list[dict[str, str]] = []
    seen: set[tuple[float, float]] = set()
    for flag in flags:
        if flag["peak_xy"]:
            key = (round(flag["peak_xy"][0], 3), round(flag["peak_xy"][1], 3))
            if key not in seen:
                seen.add(key)
                markers.append(_marker(flag["peak_xy"], f"{flag['code']} ({flag['severity']})",
                                       flag["severity_class"]))
    peak = _xy(stream_scores.get("difference_peak_xy"))
    if peak and (round(peak[0], 3), round(peak[1], 3)) not in seen:
        markers.append(_marker(peak, "strongest difference", "peak"))
    return markers


def _marker(xy: tuple[float, float], label: str, css: str) -> dict[str, str]:
    x, y = (min(max(v, 0.0), 1.0) for v in xy)
    return {"style": f"left:{100 * x:.2f}%;top:{100 * y:.2f}%", "label": f"{label} at x={_fmt(xy[0])}, "
            f"y={_fmt(xy[1])}", "css": css}


def _confusion_view(confusion: Mapping[str, Any], matrix: np.ndarray | None, report: Mapping[str, Any],
                    url: Callable[[Any], str | None]) -> dict[str, Any] | None:
    if matrix is None:
        return None
    classes = [_text(c) for c in confusion["classes"]]
    k = len(classes)
    audited = {(_text(p.get("a")), _text(p.get("b"))) for p in _as_list(report.get("pairs"))
               if isinstance(p, Mapping)}
    audited |= {(b, a) for a, b in audited}
    table = None
    if k <= TABLE_MAX_CLASSES:
        table = [{"cls": classes[i], "cells": [{"value": f"{matrix[i, j]:g}", "audited": (classes[i], classes[j])
                                                in audited, "diagonal": i == j} for j in range(k)]}
                 for i in range(k)]
    return {
        "png": url(CONFUSION_PNG),
        "alt": f"Heat map of the confusion matrix over {k} classes (rows true class, columns predicted class); "
               f"the cells of the {len(audited) // 2} audited pairs are outlined.",
        "classes": classes,
        "table": table,
    }


def _live_view(live: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if live is None:
        return None
    progress = live.get("progress")
    progress = min(max(float(progress), 0.0), 1.0) if _is_number(progress) else 0.0
    refresh = live.get("refresh_s")
    return {
        "progress": progress,
        "percent": f"{100 * progress:.0f}%",
        "status": _text(live.get("status")) or "running",
        "message": _text(live.get("message")),
        "refresh_s": int(refresh) if _is_number(refresh) and refresh > 0 else None,
    }


def _streams(audit: Mapping[str, Any], report: Mapping[str, Any]) -> list[dict[str, str]]:
    declared = [s for s in _as_list(audit.get("streams")) if isinstance(s, Mapping) and s.get("name")]
    streams = [{"name": _text(s["name"]), "modality": _text(s.get("modality"))} for s in declared]
    names = {s["name"] for s in streams}
    for pair in _as_list(report.get("pairs")):
        artifacts = _as_mapping(_as_mapping(pair).get("artifacts"))
        found = list(_as_mapping(artifacts.get("difference")))
        for per_class in _as_mapping(artifacts.get("clips")).values():
            found += list(_as_mapping(per_class))
        for name in found:
            if str(name) not in names:
                names.add(str(name))
                streams.append({"name": str(name), "modality": ""})
    if not streams:
        streams = [dict(s) for s in DEFAULT_STREAMS]
    for s in streams:
        s["modality_label"] = MODALITY_LABELS.get(s["modality"], s["modality"])
    return streams


# ---------------------------------------------------------------------------------------------- helpers

@lru_cache(maxsize=1)
def _template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=1)
def _stylesheet() -> Markup:
    css = STYLESHEET.read_text(encoding="utf-8")
    if "</" in css:
        raise ValueError(f"{STYLESHEET} must not contain '</' (it is inlined into a <style> element)")
    return Markup(css)


def _asset(rel: Any, asset_url: AssetUrl) -> str | None:
    """The page URL of an artifact path, or None when there is none or it is not a relative path."""
    if not isinstance(rel, str) or not rel.strip():
        return None
    parts = urlsplit(rel.strip())
    if parts.scheme or parts.netloc or rel.strip().startswith(("/", "\\")):
        log.warning("report artifact %r is not a relative path; not linked", rel)
        return None
    return asset_url(rel.strip())


def _artifact_paths(report: Mapping[str, Any]) -> Iterator[str]:
    for pair in _as_list(report.get("pairs")):
        artifacts = _as_mapping(_as_mapping(pair).get("artifacts"))
        for per_class in _as_mapping(artifacts.get("clips")).values():
            for clips in _as_mapping(per_class).values():
                for clip in _as_list(clips):
                    for key in ("gif", "mp4", "png"):
                        rel = _as_mapping(clip).get(key)
                        if _asset(rel, lambda r: r):
                            yield rel
        for difference in _as_mapping(artifacts.get("difference")).values():
            rel = _as_mapping(difference).get("png")
            if _asset(rel, lambda r: r):
                yield rel


def _confusion_matrix(confusion: Mapping[str, Any]) -> np.ndarray | None:
    classes, matrix = confusion.get("classes"), confusion.get("matrix")
    if not isinstance(classes, Sequence) or isinstance(classes, str) or not classes:
        return None
    try:
        array = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.shape != (len(classes), len(classes)) or not np.all(np.isfinite(array)) or np.any(array < 0):
        return None
    return array


def _numeric_rows(value: Any, path: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every numeric leaf (or pair of numbers) under ``value``, labelled by its key path."""
    label = " · ".join(p.replace("_", " ") for p in path)
    if _is_number(value):
        return [{"label": label, "value": _fmt(value), "help": "", "path": path}]
    if _xy(value):
        return [{"label": label, "value": _fmt_xy(value), "help": "", "path": path}]
    if isinstance(value, Mapping):
        return [row for k, v in value.items() for row in _numeric_rows(v, path + (str(k),))]
    return []


def _is_per_class(value: Any, a: str, b: str) -> bool:
    return isinstance(value, Mapping) and any(isinstance(value.get(c), Mapping) for c in (a, b))


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _xy(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(_is_number(v) and math.isfinite(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "n/a" if math.isnan(value) else ("∞" if value > 0 else "−∞")
        if value.is_integer() and abs(value) < 1e6:
            return f"{int(value):,}" if abs(value) >= 1000 else f"{value:.1f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 0.001:
            return f"{value:.1e}"
        return f"{value:.3g}"
    return _text(value)


def _fmt_xy(value: Any) -> str | None:
    xy = _xy(value)
    return f"({_fmt(xy[0])}, {_fmt(xy[1])})" if xy else None


def _fmt_rate(value: Any) -> str:
    return f"{100 * float(value):.0f}%" if _is_number(value) and math.isfinite(value) else "—"


def _fmt_timing(key: str, value: Any) -> str:
    if key == "cost" and isinstance(value, Mapping):  # model evaluations per stage (forward-equivalents)
        return " · ".join(f"{stage} {int(c.get('forward_equivalents', 0)):,} forward-equivalents "
                          f"({int(c.get('evaluations', 0)):,} evaluations)"
                          for stage, c in value.items() if isinstance(c, Mapping))
    if _is_number(value) and key.endswith("_s"):
        seconds = float(value)
        return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return _fmt(value)


def _fmt_option(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return _fmt(value)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []

