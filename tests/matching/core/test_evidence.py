"""The evidence PNG: layout, outlines where the polygons are, no overlay without a match."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from matching.core import evidence
from matching.core.evidence import OUTLINE_COLOUR, evidence_size, render_evidence
from matching.core.geometry import DEFAULT_QUERY_MAX_FEATURES, Verification, extract_features, verify


@pytest.fixture(scope="module")
def reference() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def query(reference: Image.Image) -> Image.Image:
    # Rotated, cropped to the upper left and shrunk: the copy fills the suspect image.
    return reference.rotate(8, resample=Image.Resampling.BICUBIC).crop((40, 30, 400, 380)).resize((300, 292))


@pytest.fixture(scope="module")
def verification(query: Image.Image, reference: Image.Image) -> Verification:
    v = verify(extract_features(query, max_features=DEFAULT_QUERY_MAX_FEATURES, with_mirror=True),
               extract_features(reference))
    assert v.accepted, v.reason
    return v


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG"
    im.load()
    return im.convert("RGB")


def outline_near(canvas: np.ndarray, x: float, y: float, radius: int = 3) -> bool:
    patch = canvas[int(y) - radius:int(y) + radius + 1, int(x) - radius:int(x) + radius + 1]
    return bool(np.all(patch == OUTLINE_COLOUR, axis=-1).any())


def test_layout_and_size(query: Image.Image, reference: Image.Image, verification: Verification) -> None:
    im = decode(render_evidence(query, reference, verification, title="modified_copy", max_height=400))
    # Both panels 400 high (the cap): the 300x292 suspect 411 wide, the 512x512 reference 400, side by side
    # between 12 px margins and a 16 px gap, under a 28 px title, above three 20 px caption lines.
    assert im.size == evidence_size(query, reference, max_height=400) == (851, 512)
    canvas = np.asarray(im).astype(int)
    for image, (x0, width) in ((query, (12, 411)), (reference, (439, 400))):
        panel = canvas[28:428, x0:x0 + width]
        # Each panel is its picture (outlines and match lines cover a small part of it).
        expected = np.asarray(image.convert("RGB").resize((width, 400), Image.Resampling.BILINEAR)).astype(int)
        assert np.median(np.abs(panel - expected)) < 12
    assert np.abs(canvas[440:, :] - evidence._BACKGROUND).sum(axis=-1).max() > 200  # the captions are written


def test_polygons_are_outlined_on_both_panels(query: Image.Image, reference: Image.Image,
                                               verification: Verification) -> None:
    max_h = 480
    canvas = np.asarray(decode(render_evidence(query, reference, verification, max_height=max_h)))
    h = min(max_h, max(query.height, reference.height, evidence.MIN_PANEL_HEIGHT))
    q_w = round(query.width * h / query.height)
    qx0, rx0, y0 = evidence.MARGIN, evidence.MARGIN + q_w + evidence.GAP, evidence.HEADER
    r_w = round(reference.width * h / reference.height)
    panels = (
        (verification.query_polygon, qx0, q_w / query.width, h / query.height),
        (verification.reference_polygon, rx0, r_w / reference.width, h / reference.height),
    )
    for poly, x0, sx, sy in panels:
        pts = np.array(poly) * [sx, sy] + [x0, y0]
        # Every edge of the polygon is drawn: check its midpoint.
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            if np.hypot(*(b - a)) < 10:
                continue
            mid = (a + b) / 2
            assert outline_near(canvas, *mid), (poly, mid)
    # The reference outline is a rotated quadrilateral inside the protected panel, not its frame.
    x, y = np.array(verification.reference_polygon).T
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    assert 0.35 < area / (512 * 512) < 0.7
    # Correspondence lines are drawn between the panels.
    gap = canvas[y0:y0 + h, qx0 + q_w + 2:rx0 - 2]
    assert (np.abs(gap.astype(int) - evidence._BACKGROUND).sum(axis=-1) > 60).any()


@pytest.mark.parametrize("rejected", [True, False])
def test_no_overlay_without_an_accepted_verification(query: Image.Image, reference: Image.Image,
                                                     rejected: bool) -> None:
    v = Verification(False, "too few inliers (3 < 10)", 3) if rejected else None
    im = decode(render_evidence(query, reference, v, title="none"))
    assert im.size == evidence_size(query, reference) == (1013, 592)  # panels 480 high (the default cap)
    assert not np.all(np.asarray(im) == OUTLINE_COLOUR, axis=-1).any()


def test_long_captions_stay_inside_the_picture(query: Image.Image, reference: Image.Image,
                                                verification: Verification) -> None:
    im = decode(render_evidence(query, reference, verification, title="word " * 80, max_height=100))
    assert im.size == evidence_size(query, reference, max_height=100)
    assert im.width < 250  # far too narrow for the title on one line
    caption = np.asarray(im)[evidence.HEADER + 100 + evidence.MARGIN:]
    # Text was drawn in the caption block, and nothing spilled into the right margin.
    assert (np.abs(caption.astype(int) - evidence._BACKGROUND).sum(axis=-1) > 100).any()
    assert np.all(np.asarray(im)[:, -2:] == evidence._BACKGROUND)
