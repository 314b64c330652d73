"""The aligned look (matching/core/geometry.py ``aligned_verification``, docs/geometry.md): a copy
stretched, turned, padded, cut or mirrored whose flat shapes keep too few keypoints for the
inlier count is aligned to the reference by its pixels (ECC) and accepted with the map's polygons
and edit report; photos, another logo of the same style and a flat picture are not.

Pictures: marks drawn here and scikit-image photos the CNN head was not trained on."""
from __future__ import annotations

import math

import pytest
from PIL import Image, ImageFilter

from bench.metrics import polygon_iou
from matching.core import geometry
from matching.core.loading import load_image
from tests.images import drawn_logo, encode, photo
from tests.matching.core.test_crop_look import _jpeg, _other_logo, _plain_logo


def _features(image: Image.Image) -> geometry.Features:
    return geometry.extract_features(image, with_mirror=False)


def _stretched_turned(image: Image.Image, *, stretch: float, angle: float, scale: float,
                      pad: int = 40) -> tuple[Image.Image, list[list[float]]]:
    """``image`` stretched vertically, turned ``angle`` degrees counter-clockwise on white, padded
    with a grey frame, scaled by ``scale`` and blurred a little; and where its corners went."""
    w, h = image.size
    tall = image.resize((w, round(h * stretch)), Image.Resampling.BICUBIC)
    turned = tall.rotate(angle, expand=True, fillcolor=(255, 255, 255), resample=Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (turned.width + 2 * pad, turned.height + 2 * pad), (225, 228, 235))
    canvas.paste(turned, (pad, pad))
    t = math.radians(angle)
    corners = []
    for x, y in ((0, 0), (w, 0), (w, h), (0, h)):
        dx, dy = x - tall.width / 2, y * tall.height / h - tall.height / 2
        corners.append([(dx * math.cos(t) + dy * math.sin(t) + turned.width / 2 + pad) * scale,
                        (-dx * math.sin(t) + dy * math.cos(t) + turned.height / 2 + pad) * scale])
    small = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.Resampling.LANCZOS)
    return _jpeg(small.filter(ImageFilter.GaussianBlur(1.0)), quality=50), corners


@pytest.mark.parametrize(("stretch", "angle", "scale"), [(1.6, 15.0, 0.5), (0.6, -10.0, 0.7)])
def test_a_stretched_turned_padded_logo_too_plain_for_keypoints_is_aligned(stretch: float, angle: float,
                                                                           scale: float) -> None:
    logo = _plain_logo()
    copy, corners = _stretched_turned(logo, stretch=stretch, angle=angle, scale=scale)
    query, reference = _features(copy), _features(logo)
    assert not geometry.verify(query, reference, min_inliers=12).accepted  # 5-8 consistent keypoints
    found = geometry.aligned_verification(query, reference)
    assert found is not None and found.accepted and found.model == "aligned"
    assert found.inlier_ratio >= geometry.ALIGN_MIN_NCC
    assert polygon_iou(found.query_polygon, corners, copy.size) >= 0.9
    assert found.edit is not None and not found.edit.mirrored
    assert found.edit.rotation_deg == pytest.approx(angle, abs=2.0)
    assert max(found.edit.aspect_change, 1 / found.edit.aspect_change) == pytest.approx(
        max(stretch, 1 / stretch), rel=0.06)
    assert "stretched" in found.edit.describe() and "rotated" in found.edit.describe()


def test_a_mirrored_crop_is_aligned_and_said_to_be_mirrored() -> None:
    logo = _plain_logo()
    part = logo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((0, 0, 180, 240))
    found = geometry.aligned_verification(_features(_jpeg(part)), _features(logo))
    assert found is not None and found.edit is not None
    assert found.edit.mirrored and 0.65 <= found.edit.visible_fraction <= 0.85
    # The part kept is the reference's right three quarters (mirrored into the left).
    assert polygon_iou(found.reference_polygon, [[60, 0], [240, 0], [240, 240], [60, 240]], logo.size) >= 0.9
    assert geometry.aligned_verification(_features(_jpeg(part)), _features(logo), mirrored=False) is None


@pytest.mark.parametrize("name", ["coffee", "camera", "astronaut"])
def test_photos_do_not_align_with_a_logo(name: str) -> None:
    query = _features(photo(name))
    for logo in (_plain_logo(), drawn_logo()):
        assert geometry.aligned_verification(query, _features(logo)) is None


def test_another_logo_of_the_same_style_a_flat_picture_and_another_photo_do_not_align() -> None:
    for query, reference in ((_other_logo(), drawn_logo()), (_other_logo(), _plain_logo()),
                             (Image.new("RGB", (150, 150), (255, 255, 255)), _plain_logo()),
                             (photo("coffee"), photo("camera"))):
        assert geometry.aligned_verification(_features(query), _features(reference)) is None


def test_a_check_matches_a_stretched_turned_logo_through_the_aligned_look() -> None:
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    refs = [(1, photo("coffee")), (2, photo("camera")), (3, _other_logo()), (4, _plain_logo())]
    indexed = index_references(refs, embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    copy, corners = _stretched_turned(_plain_logo(), stretch=1.6, angle=15.0, scale=0.5)
    outcome = matcher.match(load_image(encode(copy, "JPEG", quality=80)))
    best = outcome.decisions[0]
    assert best.reference_id == 4 and best.is_match, outcome.decisions[:3]
    assert best.signal_scores["inliers"] < 12  # the local features alone do not confirm it
    assert best.signal_scores.get("aligned_score", 0) >= geometry.ALIGN_MIN_NCC
    assert best.region is not None and polygon_iou(best.region["query"], corners, copy.size) >= 0.9
    assert best.edit is not None and "stretched 1.6" in best.edit["description"]
    assert not any(d.is_match for d in outcome.decisions if d.reference_id != 4)


def _shuffled(image: Image.Image, *, share: float, block_share: float, seed: int) -> Image.Image:
    """``share`` of the picture's small blocks (``block_share`` of its long side) trade places,
    as the chains suite's ``shuffle`` edit does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = np.asarray(image.convert("RGB")).copy()
    b = max(2, round(block_share * max(image.size)))
    rows, cols = a.shape[0] // b, a.shape[1] // b
    chosen = rng.choice(rows * cols, size=round(rows * cols * share), replace=False)
    blocks = [a[(i // cols) * b:(i // cols + 1) * b, (i % cols) * b:(i % cols + 1) * b].copy()
              for i in rng.permutation(chosen)]
    for i, block in zip(chosen, blocks, strict=True):
        a[(i // cols) * b:(i // cols + 1) * b, (i % cols) * b:(i % cols + 1) * b] = block
    return Image.fromarray(a, "RGB")


def test_a_shuffled_stretched_copy_is_aligned_by_the_median_look_only() -> None:
    logo = _other_logo()
    stretched = logo.resize((logo.width, round(logo.height * 1.3)), Image.Resampling.BICUBIC)
    copy = _jpeg(_shuffled(stretched, share=0.25, block_share=0.015, seed=2), quality=80)
    query, reference = _features(copy), _features(logo)
    assert geometry.aligned_verification(query, reference) is None  # the traded blocks break the plain look
    found = geometry.aligned_verification(query, reference, median=True)
    assert found is not None and found.accepted and found.model == "aligned"
    assert polygon_iou(found.query_polygon, [[0, 0], [copy.width, 0], [copy.width, copy.height],
                                             [0, copy.height]], copy.size) >= 0.9
    assert found.edit is not None and max(found.edit.aspect_change, 1 / found.edit.aspect_change) == pytest.approx(
        1.3, rel=0.06)


def test_the_median_look_does_not_align_other_logos_photos_or_flat_pictures() -> None:
    shuffled = _shuffled(_other_logo(), share=0.25, block_share=0.015, seed=2)
    for query, reference in ((_other_logo(), drawn_logo()), (_other_logo(), _plain_logo()),
                             (shuffled, drawn_logo()), (shuffled, _plain_logo()),
                             (Image.new("RGB", (150, 150), (255, 255, 255)), _plain_logo()),
                             (photo("coffee"), photo("camera")), (photo("astronaut"), drawn_logo())):
        assert geometry.aligned_verification(_features(query), _features(reference), median=True) is None


@pytest.mark.parametrize(("name", "angle"), [("plain", -37.0), ("coffee", 23.0), ("drawn", 33.0)])
def test_a_copy_turned_past_the_plain_starts_is_aligned_by_the_turned_look(name: str, angle: float) -> None:
    base = _plain_logo() if name == "plain" else drawn_logo() if name == "drawn" else photo(name)
    copy = _jpeg(base.rotate(angle, expand=True, fillcolor=(0, 0, 0), resample=Image.Resampling.BICUBIC), quality=80)
    query, reference = _features(copy), _features(base)
    assert geometry.aligned_verification(query, reference) is None  # upright starts: ECC does not turn that far
    found = geometry.aligned_verification(query, reference, turned=True)
    assert found is not None and found.model == "aligned" and found.edit is not None
    assert found.edit.rotation_deg == pytest.approx(angle, abs=1.5)
    assert not found.edit.mirrored
    # The reference's corners land where the turn put them (the copy's frame grew around them).
    w, h = base.size
    t = math.radians(angle)
    corners = [[(x - w / 2) * math.cos(t) + (y - h / 2) * math.sin(t) + copy.width / 2,
                -(x - w / 2) * math.sin(t) + (y - h / 2) * math.cos(t) + copy.height / 2]
               for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    assert polygon_iou(found.query_polygon, corners, copy.size) >= 0.9


def test_the_turned_look_does_not_align_other_logos_photos_or_flat_pictures() -> None:
    turned_other = _other_logo().rotate(30, expand=True, fillcolor=(0, 0, 0))
    for query, reference in ((turned_other, drawn_logo()), (turned_other, _plain_logo()),
                             (photo("coffee").rotate(-20, expand=True), photo("camera")),
                             (Image.new("RGB", (150, 150), (255, 255, 255)), _plain_logo()),
                             (photo("astronaut").rotate(25, expand=True), drawn_logo())):
        assert geometry.aligned_verification(_features(query), _features(reference), turned=True) is None


@pytest.mark.parametrize("edit", ["shuffled", "turned"])
def test_a_check_matches_a_shuffled_or_turned_logo_through_the_median_or_turned_look(edit: str) -> None:
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    refs = [(1, photo("coffee")), (2, photo("camera")), (3, _other_logo()), (4, _plain_logo()), (5, drawn_logo())]
    indexed = index_references(refs, embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    if edit == "shuffled":
        logo, want = _other_logo(), 3
        stretched = logo.resize((logo.width, round(logo.height * 1.3)), Image.Resampling.BICUBIC)
        copy = _shuffled(stretched, share=0.25, block_share=0.015, seed=2)
    else:
        logo, want = _plain_logo(), 4
        copy = logo.rotate(-37.0, expand=True, fillcolor=(0, 0, 0), resample=Image.Resampling.BICUBIC).filter(
            ImageFilter.GaussianBlur(1.5))
    outcome = matcher.match(load_image(encode(copy, "JPEG", quality=70)))
    best = outcome.decisions[0]
    assert best.reference_id == want and best.is_match, outcome.decisions[:3]
    assert best.signal_scores["inliers"] < 12  # the local features alone do not confirm it
    assert best.signal_scores.get("aligned_score", 0) >= geometry.ALIGN_MIN_NCC
    assert best.edit is not None
    if edit == "turned":
        assert best.edit["rotation_deg"] == pytest.approx(-37.0, abs=1.5)
    assert not any(d.is_match for d in outcome.decisions if d.reference_id != want)


def test_the_median_and_turned_looks_go_only_to_candidates_the_cnn_finds_near(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    from matching.core import matcher as matcher_module
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    refs = [(1, photo("coffee")), (2, photo("camera")), (3, _other_logo()), (4, _plain_logo()), (5, drawn_logo())]
    indexed = index_references(refs, embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    copy = _plain_logo().rotate(-37.0, expand=True, fillcolor=(0, 0, 0), resample=Image.Resampling.BICUBIC).filter(
        ImageFilter.GaussianBlur(1.5))
    data = encode(copy, "JPEG", quality=70)
    looks: list[str] = []
    aligned = geometry.aligned_verification

    def spy(query: geometry.Features, reference: geometry.Features, **kwargs: bool) -> geometry.Verification | None:
        looks.append("median" if kwargs.get("median") else "turned" if kwargs.get("turned") else "plain")
        return aligned(query, reference, **kwargs)

    monkeypatch.setattr(geometry, "aligned_verification", spy)
    outcome = matcher.match(load_image(data))
    best = outcome.decisions[0]
    assert best.reference_id == 4 and best.is_match and "aligned_score" in best.signal_scores
    assert best.signal_scores["cnn_score"] >= matcher_module.FURTHER_LOOKS_MIN_CNN
    assert "turned" in looks
    # The same copy, with the bar above the candidate's cosine: the plain look only, and no match.
    looks.clear()
    monkeypatch.setattr(matcher_module, "FURTHER_LOOKS_MIN_CNN", best.signal_scores["cnn_score"] + 0.01)
    outcome = matcher.match(load_image(data))
    assert "plain" in looks and "median" not in looks and "turned" not in looks
    assert not any(d.is_match and "aligned_score" in d.signal_scores for d in outcome.decisions)
