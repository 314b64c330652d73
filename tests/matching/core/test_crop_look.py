"""The crop look (matching/core/geometry.py ``crop_verification``, docs/geometry.md): a part of a
reference cut out, whose flat shapes keep too few keypoints for the inlier count, is found by its
thumbnail in the reference's; other pictures and flat crops are not.

Pictures: a brand mark drawn here and scikit-image photos the CNN head was not trained on."""
from __future__ import annotations

import io
import re

import pytest
from PIL import Image, ImageDraw, ImageFont

from bench.metrics import polygon_iou
from matching.core import geometry
from matching.core.loading import load_image
from tests.images import drawn_logo, encode, photo


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _other_logo() -> Image.Image:
    """Another brand's mark in the same flat style: a badge, a triangle, a disc and a word."""
    tile = Image.new("RGB", (240, 240), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.rounded_rectangle((20, 30, 220, 150), radius=20, fill=(30, 90, 200))
    draw.polygon([(50, 60), (110, 140), (170, 60)], fill=(250, 250, 250))
    draw.ellipse((150, 70, 200, 120), fill=(240, 160, 0))
    draw.text((120, 200), "NOVA", fill=(30, 90, 200), font=ImageFont.load_default(size=44), anchor="mm")
    return tile


def _plain_logo() -> Image.Image:
    """A mark of smooth shapes (a crescent, a rounded bar): few corners, so few ORB keypoints."""
    tile = Image.new("RGB", (240, 240), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.ellipse((25, 25, 215, 215), fill=(20, 110, 70))
    draw.ellipse((70, 55, 200, 185), fill=(255, 255, 255))
    draw.rounded_rectangle((40, 150, 230, 190), radius=20, fill=(240, 140, 20))
    return tile


def _features(image: Image.Image) -> geometry.Features:
    return geometry.extract_features(image, with_mirror=False)


def _corner(image: Image.Image, area: float, right: bool, bottom: bool) -> tuple[Image.Image, list[list[float]]]:
    w, h = image.size
    cw, ch = round(w * area ** 0.5), round(h * area ** 0.5)
    x0, y0 = (w - cw) if right else 0, (h - ch) if bottom else 0
    box = [[x0, y0], [x0 + cw, y0], [x0 + cw, y0 + ch], [x0, y0 + ch]]
    return image.crop((x0, y0, x0 + cw, y0 + ch)), box


def test_a_corner_of_a_logo_too_plain_for_keypoints_is_found_by_the_crop_look() -> None:
    logo = drawn_logo()
    reference = _features(logo)
    part, box = _corner(logo, 0.4, right=False, bottom=False)
    query = _features(_jpeg(part))
    plain = geometry.verify(query, reference, min_inliers=12)
    assert not plain.accepted  # the badge's corner has about 9 consistent keypoints
    found = geometry.crop_verification(query, reference)
    assert found is not None and found.accepted and found.model == "crop"
    assert found.inlier_ratio >= geometry.CROP_MIN_NCC
    assert polygon_iou(found.reference_polygon, box, logo.size) >= 0.85
    assert found.query_polygon == [[0.0, 0.0], [float(part.width), 0.0], [float(part.width), float(part.height)],
                                   [0.0, float(part.height)]]
    assert found.edit is not None and 0.3 <= found.edit.visible_fraction <= 0.5
    assert "cropped to" in found.edit.describe()


def test_a_rescaled_recompressed_crop_reports_its_scale() -> None:
    logo = drawn_logo()
    part, box = _corner(logo, 0.4, right=True, bottom=True)
    small = _jpeg(part.resize((round(part.width * 0.7), round(part.height * 0.7))), quality=50)
    found = geometry.crop_verification(_features(small), _features(logo))
    assert found is not None and found.edit is not None
    assert found.edit.scale == pytest.approx(0.7, abs=0.06)
    assert polygon_iou(found.reference_polygon, box, logo.size) >= 0.85


@pytest.mark.parametrize("name", ["coffee", "camera", "astronaut"])
def test_parts_of_other_pictures_are_not_crops_of_the_logo(name: str) -> None:
    other = photo(name)
    part, _box = _corner(other, 0.4, right=False, bottom=True)
    assert geometry.crop_verification(_features(part), _features(drawn_logo())) is None


def test_another_logo_of_the_same_style_and_a_flat_crop_are_not_crops() -> None:
    reference = _features(drawn_logo())
    for image in (_other_logo(), _corner(_other_logo(), 0.4, right=False, bottom=False)[0],
                  Image.new("RGB", (150, 150), (255, 255, 255))):
        assert geometry.crop_verification(_features(image), reference) is None


def test_a_check_matches_a_logo_corner_through_the_crop_look() -> None:
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    refs = [(1, photo("coffee")), (2, photo("camera")), (3, _other_logo()), (4, _plain_logo())]
    indexed = index_references(refs, embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    part, box = _corner(_plain_logo(), 0.4, right=False, bottom=False)
    outcome = matcher.match(load_image(encode(part, "JPEG", quality=70)))
    best = outcome.decisions[0]
    assert best.reference_id == 4 and best.is_match, outcome.decisions[:3]
    assert best.signal_scores["inliers"] < 12  # the local features alone do not confirm it
    assert best.signal_scores.get("crop_score", 0) >= geometry.CROP_MIN_NCC
    assert best.region is not None and polygon_iou(best.region["reference"], box, (240, 240)) >= 0.85
    assert best.edit is not None and re.fullmatch(r"cropped to (39|40|41) % of the original", best.edit["description"])
    assert not any(d.is_match for d in outcome.decisions if d.reference_id != 4)
