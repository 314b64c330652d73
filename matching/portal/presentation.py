"""Turning match evidence into words and shapes for people: the edit report, per-signal
scores and the copied region's outline. Every function copes with missing parts, so
a hash-only match (no region, no edit report, no evidence image) still reads well."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matching.models import Match


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _percent(fraction: float) -> str:
    return f"{round(fraction * 100)} %"


def describe_edit_report(report: dict[str, Any] | None) -> str:
    """One sentence such as "Cropped to 62 % of the original, rotated 7°, mirrored"."""
    if not report:
        return ""
    text = report.get("description")
    if isinstance(text, str) and text.strip():
        text = text.strip()
        return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
    parts: list[str] = []
    visible = _number(report.get("visible_fraction"))
    if visible is not None and visible < 0.98:
        parts.append(f"cropped to {_percent(visible)} of the original")
    scale = _number(report.get("scale"))
    if scale is not None and abs(scale - 1) > 0.03:
        parts.append(f"scaled to {_percent(scale)}")
    rotation = _number(report.get("rotation_deg"))
    if rotation is not None and abs(rotation) >= 1:
        parts.append(f"rotated {round(rotation)}°")
    if report.get("mirrored") is True:
        parts.append("mirrored")
    coverage = _number(report.get("query_coverage"))
    if coverage is not None and coverage < 0.9:
        parts.append(f"filling {_percent(coverage)} of the suspect picture")
    if not parts:
        return "No geometric change found: same framing, size and orientation."
    sentence = ", ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def edit_report_facts(report: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not report:
        return []
    facts: list[tuple[str, str]] = []
    scale = _number(report.get("scale"))
    if scale is not None:
        facts.append(("Scale", f"{scale:.2f}×"))
    rotation = _number(report.get("rotation_deg"))
    if rotation is not None:
        facts.append(("Rotation", f"{rotation:.1f}°"))
    if isinstance(report.get("mirrored"), bool):
        facts.append(("Mirrored", "yes" if report["mirrored"] else "no"))
    visible = _number(report.get("visible_fraction"))
    if visible is not None:
        facts.append(("Share of the original visible", _percent(visible)))
    coverage = _number(report.get("query_coverage"))
    if coverage is not None:
        facts.append(("Share of the suspect it fills", _percent(coverage)))
    return facts


@dataclass(frozen=True)
class SignalRow:
    label: str
    value: str
    fraction: float | None  # 0..1 similarity for a bar, when the signal has one
    help: str = ""


_BITS = {
    "phash_distance": ("pHash distance", 64, "64-bit perceptual hash: bits that differ (lower is closer)"),
    "phash_variant_distance": ("pHash, best flip or turn", 64,
                               "the closest of the eight flipped and turned variants"),
    "pdq_distance": ("PDQ distance", 256, "256-bit PDQ hash: bits that differ (lower is closer)"),
    "pdq_variant_distance": ("PDQ, best flip or turn", 256, "the closest of the eight flipped and turned variants"),
}
_YES_NO = {"sha256_bytes": ("Identical file", "same SHA-256 of the file bytes"),
           "sha256_pixels": ("Identical pixels", "same SHA-256 of the decoded pixels"),
           "exact": ("Identical picture", "same SHA-256 of the file bytes or of the decoded pixels")}
_SIMILARITY = {"cnn_score": "CNN similarity", "cnn_similarity": "CNN similarity",
               "embedding_similarity": "CNN similarity", "cosine": "CNN similarity", "cnn": "CNN similarity"}
_TEXT = {"verification": "Geometric check", "pdq_variant": "Turned or flipped"}


def signal_rows(scores: dict[str, Any] | None) -> list[SignalRow]:
    rows: list[SignalRow] = []
    for key, value in (scores or {}).items():
        if key in _YES_NO:
            label, help_text = _YES_NO[key]
            rows.append(SignalRow(label, "yes" if value else "no", 1.0 if value else 0.0, help_text))
        elif key in _BITS and _number(value) is not None:
            label, bits, help_text = _BITS[key]
            distance = int(value)
            rows.append(SignalRow(label, f"{distance} of {bits} bits", max(0.0, 1 - distance / bits), help_text))
        elif key in _SIMILARITY and _number(value) is not None:
            rows.append(SignalRow(_SIMILARITY[key], f"{float(value):.3f}", max(0.0, min(1.0, float(value)))))
        elif key == "inliers" and _number(value) is not None:
            rows.append(SignalRow("Matching local features", f"{int(value)} inliers", None,
                                  "feature points that agree on one geometric transform (RANSAC)"))
        elif _number(value) is not None:
            number = float(value)
            text = f"{int(number)}" if number.is_integer() else f"{number:.3f}"
            rows.append(SignalRow(key.replace("_", " ").capitalize(), text,
                                  number if 0 <= number <= 1 and not number.is_integer() else None))
        elif isinstance(value, (str, bool)):
            rows.append(SignalRow(_TEXT.get(key, key.replace("_", " ").capitalize()), str(value), None))
    return rows


@dataclass(frozen=True)
class Outline:
    width: int
    height: int
    points: str  # SVG polygon points in the image's own pixel coordinates


def _outline(polygon: Any, width: int | None, height: int | None) -> Outline | None:
    if not width or not height or not isinstance(polygon, list) or len(polygon) < 3:
        return None
    coords: list[str] = []
    for point in polygon:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            return None
        x, y = _number(point[0]), _number(point[1])
        if x is None or y is None:
            return None
        coords.append(f"{x:.1f},{y:.1f}")
    return Outline(int(width), int(height), " ".join(coords))


def suspect_size(match: Match) -> tuple[int | None, int | None]:
    check = match.source_check
    signals = ((check.result or {}).get("signals") or {}) if check is not None else {}
    return signals.get("width"), signals.get("height")


def outlines(match: Match) -> tuple[Outline | None, Outline | None]:
    """The copied region on the suspect and on the protected image, when the engine found one."""
    region = match.region if isinstance(match.region, dict) else {}
    width, height = suspect_size(match)
    image = match.protected_image
    if image is None:  # a hash-list match: nothing to outline
        return None, None
    return (_outline(region.get("query"), width, height),
            _outline(region.get("reference"), image.width, image.height))


VERDICT_TONE = {"hash_list": "danger", "exact": "danger", "near_duplicate": "warning", "modified_copy": "notice", "similar": "muted",
                "none": "ok"}
STATUS_TONE = {"new": "info", "confirmed": "danger", "dismissed": "muted", "licensed": "ok"}


# --- the protection self-test's chart (templates/portal/_self_test.html) -----------------------------

_CHART_LABEL_W = 150  # px of the SVG's 520 for the edit's name
_CHART_BAR_W = 220    # the score 0..1 spans this
_CHART_ROW_H = 26
_VERDICT_WORDS = {"exact": "exact copy", "near_duplicate": "near duplicate", "modified_copy": "modified copy",
                  "similar": "similar", "none": "no verdict"}


def _outcome(row: dict[str, Any]) -> tuple[str, str]:
    """(CSS class, words) for one edit's result."""
    raw = row.get("verdict")
    verdict = raw if isinstance(raw, str) and raw in _VERDICT_WORDS else "none"
    rank = row.get("rank")
    if row.get("found"):
        css = "st-dup" if verdict in ("exact", "near_duplicate") else "st-mod"
        return css, f"found #{rank} · {_VERDICT_WORDS[verdict]}"
    if rank:
        return ("st-similar" if verdict == "similar" else "st-weak"), f"not matched · #{rank} {_VERDICT_WORDS[verdict]}"
    return "st-miss", "not found"


def self_test_chart(results: dict[str, Any]) -> dict[str, Any]:
    """Rows of an SVG bar chart, one per edit: the bar's length is the image's score for the edited copy,
    its colour what the service decided. Coordinates are computed here so the template only places them."""
    rows = []
    for n, row in enumerate(results.get("edits") or []):
        css, words = _outcome(row)
        score = _number(row.get("score")) or 0.0
        y = 8 + n * _CHART_ROW_H
        width = max(3, round(min(1.0, max(0.0, score)) * _CHART_BAR_W))
        rows.append({"label": str(row.get("label") or row.get("edit") or ""), "css": css, "words": words,
                     "y": y, "text_y": y + 14, "width": width, "text_x": _CHART_LABEL_W + width + 6,
                     "score": score, "partial_pass": bool(row.get("partial_pass"))})
    return {"rows": rows, "height": 16 + len(rows) * _CHART_ROW_H, "bar_x": _CHART_LABEL_W,
            "track_w": _CHART_BAR_W, "found": results.get("found", 0), "total": results.get("total", len(rows)),
            "kind": results.get("kind", "photo")}
