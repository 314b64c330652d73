"""The evidence picture of a match: suspect and protected image side by side.

Left the suspect (query) image, right the protected (reference) image, both
scaled to one height; the copied region outlined on both (the polygons of
:class:`~matching.core.geometry.Verification`), a sample of inlier
correspondences drawn as lines between them, and a caption saying what was
found. Pillow only, so it renders anywhere the matcher runs.

Layout (deterministic, so callers and tests can predict the size)::

    MARGIN | suspect panel | GAP | protected panel | MARGIN
    header (labels), panels of height H, caption block of CAPTION_LINES lines

with H = min(max_height, max(query height, reference height, MIN_PANEL_HEIGHT)).
"""
from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from .geometry import Verification

__all__ = ["OUTLINE_COLOUR", "evidence_size", "render_evidence"]

# zlib level of the PNG. At Pillow's default, 6, compressing took about half of an evidence's CPU
# (70 ms of CPU an evidence on 40 dataset pictures); level 3 gives the same pixels in 38 ms for
# 2 % more bytes (`python -m bench.evidence`, docs/benchmarks.md section 12).
PNG_LEVEL = 3

OUTLINE_COLOUR = (0, 230, 64)  # the copied region, on both panels
_LINE_COLOURS = ((255, 214, 0), (0, 200, 255), (255, 96, 208), (255, 140, 0))
_BACKGROUND = (24, 24, 28)
_TEXT = (236, 236, 236)
_REJECTED = (255, 120, 100)
MARGIN = 12
GAP = 16
HEADER = 28
CAPTION_LINES = 3
LINE_HEIGHT = 20
MIN_PANEL_HEIGHT = 240
_FONT_SIZE = 15


def _panel_height(query: Image.Image, reference: Image.Image, max_height: int) -> int:
    return max(1, min(max_height, max(query.height, reference.height, MIN_PANEL_HEIGHT)))


def _scaled_width(img: Image.Image, height: int) -> int:
    return max(1, round(img.width * height / img.height))


def evidence_size(query: Image.Image, reference: Image.Image, *, max_height: int = 480) -> tuple[int, int]:
    """(width, height) of the PNG :func:`render_evidence` makes for these images."""
    h = _panel_height(query, reference, max_height)
    width = 2 * MARGIN + _scaled_width(query, h) + GAP + _scaled_width(reference, h)
    return width, HEADER + h + MARGIN + CAPTION_LINES * LINE_HEIGHT + MARGIN


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
          width: float, max_lines: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and draw.textlength(last + " …", font=font) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + " …"
    return lines


def _caption(verification: Verification | None) -> tuple[str, bool]:
    if verification is None:
        return "not geometrically verified", False
    v = verification
    if not v.accepted:
        return f"not verified: {v.reason} ({v.inliers} inliers)", False
    text = f"verified copy: {v.inliers} inliers ({v.inlier_ratio:.0%} of matches), {v.model}"
    if v.model == "mark":  # matching/core/marks.py: found by its shape and colours, not keypoints
        text = f"verified copy: the mark found by its shape and colours (correlation {v.inlier_ratio:.2f})"
    elif v.model == "crop":  # geometry.crop_verification: a part of the picture cut out, found by its pixels
        text = f"verified copy: a part of the picture cut out, found by its pixels (correlation {v.inlier_ratio:.2f})"
    elif v.model == "aligned":  # geometry.aligned_verification: the pictures aligned by their pixels
        text = f"verified copy: the pictures aligned by their pixels (correlation {v.inlier_ratio:.2f})"
    if v.edit is not None:
        text += f"; {v.edit.describe()}"
    return text, True


def render_evidence(
    query: Image.Image,
    reference: Image.Image,
    verification: Verification | None,
    *,
    title: str = "",
    max_height: int = 480,
    query_frame: tuple[int, int] | None = None,
    reference_frame: tuple[int, int] | None = None,
) -> bytes:
    """A PNG (bytes) showing why ``query`` was judged a copy of ``reference``.

    ``query_frame``/``reference_frame``: the sizes the verification's coordinates
    refer to, when the pictures given are reduced copies (``LoadedImage.width``/``height``).

    ``title`` (e.g. the verdict and score the caller decided) heads the
    caption; the verification's own outcome and edit report follow. Without
    an accepted verification the panels are drawn with no overlay.
    """
    h = _panel_height(query, reference, max_height)
    qw, rw = _scaled_width(query, h), _scaled_width(reference, h)
    width, height = evidence_size(query, reference, max_height=max_height)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    q_origin = (MARGIN, HEADER)
    r_origin = (MARGIN + qw + GAP, HEADER)
    canvas.paste(query.convert("RGB").resize((qw, h), Image.Resampling.LANCZOS), q_origin)
    canvas.paste(reference.convert("RGB").resize((rw, h), Image.Resampling.LANCZOS), r_origin)
    qf, rf = query_frame or query.size, reference_frame or reference.size
    qs = (qw / qf[0], h / qf[1])
    rs = (rw / rf[0], h / rf[1])

    def to_q(x: float, y: float) -> tuple[float, float]:
        return q_origin[0] + x * qs[0], q_origin[1] + y * qs[1]

    def to_r(x: float, y: float) -> tuple[float, float]:
        return r_origin[0] + x * rs[0], r_origin[1] + y * rs[1]

    font = _font(_FONT_SIZE)
    draw = ImageDraw.Draw(canvas)
    draw.text((q_origin[0], HEADER // 2), "suspect", fill=_TEXT, font=font, anchor="lm")
    draw.text((r_origin[0], HEADER // 2), "protected", fill=_TEXT, font=font, anchor="lm")

    accepted = verification is not None and verification.accepted
    if accepted:
        assert verification is not None
        # Lines on a translucent layer so the pictures stay readable under them.
        overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        od = ImageDraw.Draw(overlay)
        for i, (xq, yq, xr, yr) in enumerate(verification.matches_sample):
            colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
            a, b = to_q(xq, yq), to_r(xr, yr)
            od.line([a, b], fill=colour + (150,), width=1)
            for x, y in (a, b):
                od.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), outline=colour + (230,), width=1)
        canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
        draw = ImageDraw.Draw(canvas)
        for poly, to in ((verification.query_polygon, to_q), (verification.reference_polygon, to_r)):
            if len(poly) >= 3:
                pts = [to(x, y) for x, y in poly]
                draw.line(pts + [pts[0]], fill=OUTLINE_COLOUR, width=3, joint="curve")

    text, ok = _caption(verification)
    room = width - 2 * MARGIN
    lines = [(line, _TEXT) for line in _wrap(draw, title, font, room, CAPTION_LINES - 1)] if title else []
    lines += [(line, _TEXT if ok else _REJECTED)
              for line in _wrap(draw, text, font, room, CAPTION_LINES - len(lines))]
    top = HEADER + h + MARGIN
    for i, (line, colour) in enumerate(lines):
        draw.text((MARGIN, top + i * LINE_HEIGHT), line, fill=colour, font=font)
    buf = io.BytesIO()
    canvas.save(buf, "PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()

