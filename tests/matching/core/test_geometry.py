"""Geometric verification: edit reports of known transforms, rejection of
unrelated and degenerate pairs, the feature byte format."""
from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from matching.core import geometry as geo
from matching.core.geometry import (
    Features,
    edit_from_transform,
    extract_features,
    features_from_bytes,
    features_to_bytes,
    mirror_features,
    verify,
)
from tests import images
from tests.images import drawn_logo

# Unrelated scikit-image pictures the CNN head was not trained on (training/data.py;
# ``cat`` is ``chelsea`` again, so it is left out), and the brand mark drawn in tests/images.py.
UNRELATED = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "microaneurysms",
    "shepp_logan_phantom", "drawn_logo", "scribble-1", "scribble-2", "scribble-3",
    "scribble-4",
)


def scribble(seed: int) -> Image.Image:
    """Random coloured shapes, a different picture for each seed."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (480, 360), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, 480), rng.integers(0, 360)
        w, h = rng.integers(10, 90, 2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), fill=fill)
        else:
            draw.polygon([tuple(int(v) for v in rng.integers(0, 480, 2)) for _ in range(3)], fill=fill)
    return image


def photo(name: str) -> Image.Image:
    if name.startswith("scribble-"):
        return scribble(int(name.split("-")[1]))
    return drawn_logo() if name == "drawn_logo" else images.photo(name)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return photo("astronaut")


@pytest.fixture(scope="module")
def astronaut_features(astronaut: Image.Image) -> Features:
    return extract_features(astronaut)


def check(query: Image.Image, reference: Features) -> geo.Verification:
    # Suspect images are extracted as the service does: more features, mirrored too.
    v = verify(extract_features(query, max_features=geo.DEFAULT_QUERY_MAX_FEATURES, with_mirror=True),
               reference)
    assert v.accepted, v.reason
    assert v.edit is not None
    return v


def iou(a: list[list[float]], b: list[list[float]]) -> float:
    import cv2

    pa, pb = np.array(a, np.float32), np.array(b, np.float32)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    return float(inter / (cv2.contourArea(pa) + cv2.contourArea(pb) - inter))


# --------------------------------------------------------------------------
# Edit report of known transforms


def test_scale_half_is_reported_as_half(astronaut: Image.Image, astronaut_features: Features) -> None:
    v = check(astronaut.resize((256, 256), Image.Resampling.LANCZOS), astronaut_features)
    assert v.edit is not None
    assert v.edit.scale == pytest.approx(0.5, abs=0.05)
    assert abs(v.edit.rotation_deg) < 1
    assert not v.edit.mirrored
    assert v.edit.visible_fraction == pytest.approx(1.0, abs=0.03)
    assert "scaled to 50 %" in v.edit.describe()


@pytest.mark.parametrize("angle", [7, -7])
def test_rotation_is_recovered_with_its_sign(astronaut: Image.Image, astronaut_features: Features,
                                             angle: int) -> None:
    # PIL rotates counter-clockwise for positive angles; the report uses the same convention.
    v = check(astronaut.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True), astronaut_features)
    assert v.edit is not None
    assert v.edit.rotation_deg == pytest.approx(angle, abs=1)
    assert v.edit.scale == pytest.approx(1.0, abs=0.05)
    assert not v.edit.mirrored


def test_quarter_turn(astronaut: Image.Image, astronaut_features: Features) -> None:
    v = check(astronaut.transpose(Image.Transpose.ROTATE_90), astronaut_features)
    assert v.edit is not None
    assert v.edit.rotation_deg == pytest.approx(90, abs=1)


def test_mirror_is_detected(astronaut: Image.Image, astronaut_features: Features) -> None:
    mirrored = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    v = check(mirrored, astronaut_features)
    assert v.edit is not None
    assert v.edit.mirrored
    assert abs(v.edit.rotation_deg) < 1
    assert np.linalg.det(np.array(v.transform)[:2, :2]) < 0
    assert "mirrored" in v.edit.describe()
    # Descriptors are not mirror-invariant: without mirrored features the copy is missed,
    # which is why verify() needs them on one side.
    assert not verify(extract_features(mirrored), astronaut_features).accepted


def test_mirrored_features_may_sit_on_the_reference_side(astronaut: Image.Image) -> None:
    reference = extract_features(astronaut)
    reference.mirror = mirror_features(astronaut)
    v = verify(extract_features(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), reference)
    assert v.accepted and v.edit is not None and v.edit.mirrored


def test_a_known_plain_result_spares_that_half_of_a_mirrored_verification(astronaut: Image.Image,
                                                                         astronaut_features: Features,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """verify(..., plain=) with what the plain call gave tries the mirrored orientation only, and
    decides as the full call does: for a mirrored copy, a plain copy and an unrelated picture."""
    attempts: list[bool] = []
    real = geo._attempt

    def counted(q, r, mirrored, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(mirrored)
        return real(q, r, mirrored, *args, **kwargs)

    monkeypatch.setattr(geo, "_attempt", counted)
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((400, 400))
    for query in (flipped, astronaut.rotate(5).resize((380, 380)), photo("coffee")):
        whole = extract_features(query, max_features=2000)
        plain = verify(whole, astronaut_features)
        with_mirror = replace(whole, mirror=mirror_features(query, max_features=2000))
        full = verify(with_mirror, astronaut_features)
        attempts.clear()
        spared = verify(with_mirror, astronaut_features, plain=plain)
        assert attempts == [True]
        assert (spared.accepted, spared.inliers, spared.reason, spared.transform) == (
            full.accepted, full.inliers, full.reason, full.transform)
    assert spared.accepted is False and full.accepted is False  # the coffee cup is no astronaut


def test_centre_crop_keeping_60_percent(astronaut: Image.Image, astronaut_features: Features) -> None:
    side = round(512 * math.sqrt(0.6))
    x0 = (512 - side) // 2
    v = check(astronaut.crop((x0, x0, x0 + side, x0 + side)), astronaut_features)
    assert v.edit is not None
    assert v.edit.visible_fraction == pytest.approx(0.6, abs=0.1)
    assert v.edit.query_coverage == pytest.approx(1.0, abs=0.05)
    assert v.edit.scale == pytest.approx(1.0, abs=0.05)
    # The visible part of the reference is the crop box.
    box = [[x0, x0], [x0 + side, x0], [x0 + side, x0 + side], [x0, x0 + side]]
    assert iou(v.reference_polygon, box) > 0.9


def test_logo_pasted_small_into_a_photo_is_found_and_boxed() -> None:
    logo = drawn_logo()
    scene = photo("rocket").copy()
    width = round(scene.width * 0.25)
    small = logo.resize((width, width), Image.Resampling.LANCZOS)
    x0, y0 = 250, 120
    scene.paste(small, (x0, y0))
    v = check(scene, extract_features(logo))
    box = [[x0, y0], [x0 + width, y0], [x0 + width, y0 + width], [x0, y0 + width]]
    assert iou(v.query_polygon, box) >= 0.5
    assert v.edit is not None
    assert v.edit.scale == pytest.approx(width / logo.width, rel=0.15)
    assert v.edit.query_coverage < 0.1


@pytest.mark.parametrize("kind", geo.KINDS)
def test_every_kind_recovers_scale_and_rotation(astronaut: Image.Image, kind: str) -> None:
    query = astronaut.resize((300, 300), Image.Resampling.LANCZOS).rotate(
        20, resample=Image.Resampling.BICUBIC, expand=True)
    v = verify(extract_features(query, kind=kind), extract_features(astronaut, kind=kind))
    assert v.accepted, v.reason
    assert v.edit is not None
    assert v.edit.scale == pytest.approx(300 / 512, abs=0.03)
    assert v.edit.rotation_deg == pytest.approx(20, abs=1)


def test_edit_from_known_transforms() -> None:
    # Mirror, then rotate 30 degrees counter-clockwise, then halve: R(30) * 0.5 * F.
    a = math.radians(30)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    lin = rot @ (0.5 * np.diag([-1.0, 1.0]))
    h = np.eye(3)
    h[:2, :2] = lin
    h[:2, 2] = [400, 300]
    edit, poly = edit_from_transform(h, (400, 200), (800, 600))
    assert edit.mirrored
    assert edit.scale == pytest.approx(0.5)
    assert edit.rotation_deg == pytest.approx(30)
    assert edit.aspect_change == pytest.approx(1.0)
    assert not edit.perspective
    assert edit.visible_fraction == pytest.approx(1.0)
    assert edit.query_coverage == pytest.approx(0.25 * 400 * 200 / (800 * 600))
    assert len(poly) == 4
    # A 1.3x horizontal stretch of a reference half outside the query frame.
    edit, _ = edit_from_transform(np.diag([1.3, 1.0, 1.0]) @ np.array([[1, 0, -100], [0, 1, 0], [0, 0, 1.0]]),
                                  (200, 100), (130, 100))
    assert edit.aspect_change == pytest.approx(1.3)
    assert edit.visible_fraction == pytest.approx(0.5)
    assert "stretched 1.30x horizontally" in edit.describe()
    assert "cropped to 50 % of the original" in edit.describe()


# --------------------------------------------------------------------------
# Rejections


@pytest.fixture(scope="module")
def unrelated_features() -> dict[str, Features]:
    return {name: extract_features(photo(name), with_mirror=True) for name in UNRELATED}


def test_unrelated_photos_are_rejected(unrelated_features: dict[str, Features]) -> None:
    accepted = [
        (a, b, v.inliers)
        for a, b in itertools.permutations(UNRELATED, 2)
        if (v := verify(unrelated_features[a], unrelated_features[b])).accepted
    ]
    assert accepted == []


def test_each_photo_still_verifies_against_itself(unrelated_features: dict[str, Features]) -> None:
    # The rejections above are not because verification rejects everything.
    detailed = [n for n in UNRELATED if len(unrelated_features[n]) >= 100]
    assert len(detailed) >= 12
    for name in detailed:
        assert verify(unrelated_features[name], unrelated_features[name]).accepted, name


@pytest.mark.parametrize("size", [(200, 150), (8, 8)])
def test_flat_or_tiny_images_have_not_enough_detail(astronaut_features: Features,
                                                    size: tuple[int, int]) -> None:
    flat = extract_features(Image.new("RGB", size, (128, 128, 128)), with_mirror=True)
    assert len(flat) == 0
    for v in (verify(flat, astronaut_features), verify(astronaut_features, flat)):
        assert not v.accepted
        assert v.reason.startswith("not enough detail")
        assert v.edit is None and v.query_polygon == []


def _synthetic(n: int = 60, size: int = 400, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    return Features(kind="orb", width=size, height=size,
                    keypoints=rng.uniform(20, size - 20, (n, 2)).astype(np.float32),
                    descriptors=rng.integers(0, 256, (n, 32), dtype=np.uint8),
                    sizes=np.full(n, 20, np.float32), angles=rng.uniform(0, 360, n).astype(np.float32))


def _judge(h: np.ndarray, *, mirrored: bool = False, ref: Features | None = None) -> geo.Verification:
    """Judge ``h`` as if RANSAC had fitted it through perfect correspondences."""
    r = ref or _synthetic()
    proj = np.c_[r.keypoints, np.ones(len(r))] @ h.T
    q = Features(kind="orb", width=400, height=400, keypoints=(proj[:, :2] / proj[:, 2:]).astype(np.float32),
                 descriptors=r.descriptors, sizes=r.sizes.copy(), angles=r.angles.copy())
    # Orientation/size of query keypoints as the transform predicts them, so
    # only the rule under test can reject.
    idx = np.arange(len(r))
    for i in idx:
        j = geo._jacobian(h, float(r.keypoints[i, 0]), float(r.keypoints[i, 1]))
        t = math.radians(float(r.angles[i]))
        d = j @ [math.cos(t), math.sin(t)]
        q.angles[i] = math.degrees(math.atan2(d[1], d[0]))
        q.sizes[i] = r.sizes[i] * math.sqrt(abs(np.linalg.det(j)))
    fit = geo._Fit(h, "homography", np.ones(len(r), bool))
    return geo._judge(fit, q, r, idx, idx, mirrored, 15)


def test_a_plain_similarity_passes_the_rules() -> None:
    v = _judge(np.array([[0.8, 0.1, 20], [-0.1, 0.8, 30], [0, 0, 1.0]]))
    assert v.accepted, v.reason
    assert v.inliers == 60


@pytest.mark.parametrize(
    ("h", "mirrored", "reason"),
    [
        (np.diag([0.01, 0.01, 1.0]), False, "collapsed region"),
        (np.diag([40.0, 40.0, 1.0]), False, "absurd scale"),
        (np.diag([0.5, 0.05, 1.0]), False, "extreme distortion"),
        (np.diag([3.0, 0.25, 1.0]), False, "extreme distortion"),
        # The right edge maps beyond the horizon: the outline folds over itself.
        (np.array([[1.0, 0, 0], [0, 1.0, 0], [-0.004, 0, 1.0]]), False, "self-intersecting or non-convex region"),
        (np.array([[1.0, 0, 0], [0, 1.0, 0], [0.004, 0, 1.0]]), False, "extreme perspective"),
        # A flip fitted through plain descriptors, and a second flip through mirrored ones.
        (np.array([[-1.0, 0, 400], [0, 1.0, 0], [0, 0, 1.0]]), False, "inconsistent mirroring"),
        (np.eye(3), True, "inconsistent mirroring"),
        (np.array([[1.0, 0, 5000], [0, 1.0, 0], [0, 0, 1.0]]), False, "the region lies outside"),
    ],
)
def test_degenerate_transforms_are_rejected(h: np.ndarray, mirrored: bool, reason: str) -> None:
    v = _judge(h, mirrored=mirrored)
    assert not v.accepted
    assert v.reason.startswith(reason), v.reason


def test_inliers_bunched_in_a_corner_are_rejected() -> None:
    ref = _synthetic(200)
    # All keypoints but the first 20 spread out; make the fit's inliers the bunched ones.
    ref.keypoints[:20] = np.random.default_rng(1).uniform(100, 112, (20, 2))
    h = np.array([[0.9, 0, 10], [0, 0.9, 10], [0, 0, 1.0]])
    proj = np.c_[ref.keypoints, np.ones(len(ref))] @ h.T
    q = Features(kind="orb", width=400, height=400, keypoints=(proj[:, :2] / proj[:, 2:]).astype(np.float32),
                 descriptors=ref.descriptors, sizes=ref.sizes * 0.9, angles=ref.angles.copy())
    mask = np.zeros(len(ref), bool)
    mask[:20] = True
    v = geo._judge(geo._Fit(h, "homography", mask), q, ref, np.arange(200), np.arange(200), False, 15)
    assert not v.accepted
    assert v.reason.startswith("inliers concentrated in a tiny area")


def test_aligned_pictures_that_do_not_look_alike_are_rejected(astronaut_features: Features) -> None:
    # Perfect keypoint geometry, but the pixels under the region are another photo: rejected while
    # fewer than APPEARANCE_WAIVED inliers agree (a chance fit of look-alikes has a dozen or two;
    # test_forty_agreeing_inliers_need_no_look_alike_check shows the waiver above it).
    q = Features(**{**astronaut_features.__dict__, "mirror": None})
    q.thumb = extract_features(photo("camera")).thumb
    n = len(q)
    few = np.zeros(n, bool)
    few[:: n // 30] = True  # about 30 inliers spread over the picture
    assert 10 <= few.sum() < geo.APPEARANCE_WAIVED
    fit = geo._Fit(np.eye(3), "homography", few)
    v = geo._judge(fit, q, astronaut_features, np.arange(n), np.arange(n), False, 10)
    assert not v.accepted
    assert v.reason.startswith("the aligned pictures do not look alike")
    same = geo._judge(geo._Fit(np.eye(3), "homography", np.ones(n, bool)), astronaut_features,
                      astronaut_features, np.arange(n), np.arange(n), False, 10)
    assert same.accepted and same.appearance == pytest.approx(1.0)


def test_a_sticker_over_part_of_the_copy_does_not_spoil_the_appearance(
        astronaut: Image.Image, astronaut_features: Features) -> None:
    from PIL import ImageDraw

    covered = astronaut.copy()
    r = math.sqrt(0.15 * 512 * 512 / math.pi)  # a disc over 15 % of the picture
    ImageDraw.Draw(covered).ellipse((300 - r, 200 - r, 300 + r, 200 + r), fill=(255, 204, 0))
    v = check(covered, astronaut_features)
    assert v.appearance is not None and v.appearance > 0.8


def test_keypoints_disagreeing_in_orientation_are_not_inliers() -> None:
    ref = _synthetic(60)
    h = np.array([[1.0, 0, 5], [0, 1.0, 5], [0, 0, 1.0]])
    q = Features(kind="orb", width=400, height=400, keypoints=ref.keypoints + 5,
                 descriptors=ref.descriptors, sizes=ref.sizes.copy(),
                 angles=(ref.angles + 90) % 360)  # geometry fits, orientations do not
    v = geo._judge(geo._Fit(h, "homography", np.ones(60, bool)), q, ref, np.arange(60), np.arange(60), False, 15)
    assert not v.accepted
    assert v.inliers == 0


def test_kinds_must_agree(astronaut_features: Features) -> None:
    other = Features(kind="sift", width=10, height=10, keypoints=np.zeros((0, 2), np.float32),
                     descriptors=np.zeros((0, 128), np.float32))
    with pytest.raises(ValueError, match="cannot match"):
        verify(astronaut_features, other)
    with pytest.raises(ValueError, match="unknown feature kind"):
        extract_features(Image.new("RGB", (50, 50)), kind="surf")


# --------------------------------------------------------------------------
# Feature extraction and the byte format


def test_keypoints_are_in_original_pixels(astronaut: Image.Image) -> None:
    big = astronaut.resize((1536, 1536), Image.Resampling.LANCZOS)
    f = extract_features(big, max_side=512)
    assert (f.width, f.height) == (1536, 1536)
    assert f.pixel_scale == pytest.approx(3.0)
    assert f.keypoints[:, 0].max() > 1000  # scaled back, not left in 512 px space
    assert f.keypoints.min() >= 0 and f.keypoints.max() <= 1536
    # The same picture at a third of the size verifies at scale 1/3.
    v = verify(extract_features(astronaut), f)
    assert v.accepted and v.edit is not None
    assert v.edit.scale == pytest.approx(1 / 3, abs=0.02)


@pytest.mark.parametrize("kind", geo.KINDS)
def test_features_round_trip_through_bytes(astronaut: Image.Image, kind: str) -> None:
    f = extract_features(astronaut.resize((200, 200)), kind=kind, with_mirror=True)
    data = features_to_bytes(f)
    g = features_from_bytes(data)
    assert (g.kind, g.width, g.height, g.pixel_scale) == (f.kind, f.width, f.height, f.pixel_scale)
    assert f.thumb is not None and g.thumb is not None and g.mirror is not None
    np.testing.assert_array_equal(f.thumb, g.thumb)
    assert g.mirror.thumb is g.thumb
    for a, b in ((f, g), (f.mirror, g.mirror)):
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
        assert a.descriptors.dtype == b.descriptors.dtype
        np.testing.assert_array_equal(a.sizes, b.sizes)
        np.testing.assert_array_equal(a.angles, b.angles)
    assert features_from_bytes(features_to_bytes(g)).mirror is not None
    if kind == "sift":  # integer-valued float descriptors are stored as bytes
        assert len(data) < f.descriptors.nbytes


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_bytes_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        features_from_bytes(data)


def test_tampered_arrays_are_refused(astronaut_features: Features) -> None:
    import io

    buf = io.BytesIO()
    with np.load(io.BytesIO(features_to_bytes(astronaut_features))) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["descriptors"] = arrays["descriptors"][:-1]  # one row short
    np.savez(buf, **arrays)
    with pytest.raises(ValueError, match="inconsistent"):
        features_from_bytes(buf.getvalue())


def test_verification_json_is_plain(astronaut: Image.Image, astronaut_features: Features) -> None:
    import json

    v = check(astronaut.crop((0, 0, 400, 400)), astronaut_features)
    doc = json.loads(json.dumps(v.as_json()))
    assert doc["accepted"] is True
    assert len(doc["transform"]) == 3
    assert doc["edit"]["description"] == v.edit.describe()  # type: ignore[union-attr]
    assert 0 < len(doc["matches_sample"]) <= 40
    assert all(len(m) == 4 for m in doc["matches_sample"])


def test_finding_04_a_reduced_query_reports_its_region_and_edit_in_its_own_pixels() -> None:
    """The loader hands the engine large pictures reduced (matching/core/loading.py); with
    ``frame`` the features, and so the region and the edit report, stay in the picture's own
    pixels, as the portal's outlines and the API's regions expect."""
    import io

    from matching.core.loading import load_image
    from tests.images import photo

    reference = photo("chelsea")  # 451x300
    buf = io.BytesIO()
    reference.resize((1804, 1200), Image.BICUBIC).save(buf, "PNG")  # a 4x upscaled copy
    loaded = load_image(buf.getvalue(), max_side=600)
    assert loaded.image.size == (451, 300) and (loaded.width, loaded.height) == (1804, 1200)
    ref = geo.extract_features(reference)
    for frame, size, scale in ((None, (451, 300), 1.0), ((1804, 1200), (1804, 1200), 4.0)):
        query = geo.extract_features(loaded.image, frame=frame, with_mirror=True)
        assert (query.width, query.height) == size
        result = geo.verify(query, ref)
        assert result.accepted, result.reason
        xs, ys = zip(*result.query_polygon)
        assert max(xs) == pytest.approx(size[0], rel=0.03) and max(ys) == pytest.approx(size[1], rel=0.03)
        assert result.edit is not None and result.edit.scale == pytest.approx(scale, rel=0.05)
        region = geo.extract_region_features(loaded.image, (0, 0, 226, 150), frame=frame, thumb=query.thumb)
        assert region.keypoints[:, 0].max() <= size[0] / 2 * 1.02


# --------------------------------------------------------------------------
# Copies edited several times over (issue 15)


def _striped(image: Image.Image, seed: int) -> Image.Image:
    """Four semi-opaque diagonal bars across the picture, as a copier lays over it."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = image.size
    for k in range(4):
        x = (k + 0.5) * w / 4 + float(rng.uniform(-10, 10))
        draw.polygon([(x - h, h), (x - h + 0.07 * w, h), (x + 0.07 * w, 0), (x, 0)],
                     fill=(*(int(c) for c in rng.integers(0, 256, 3)), 200))
    out = image.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


def test_a_copy_turned_30_degrees_under_stripes_is_verified_and_an_unrelated_one_is_not(
        astronaut: Image.Image, astronaut_features: Features) -> None:
    copy = _striped(astronaut.rotate(30, resample=Image.Resampling.BICUBIC, expand=True), 1)
    v = check(copy, astronaut_features)
    assert v.edit is not None and abs(v.edit.rotation_deg - 30) < 3
    unrelated = _striped(photo("coffee").rotate(30, resample=Image.Resampling.BICUBIC, expand=True), 1)
    query = extract_features(unrelated, max_features=geo.DEFAULT_QUERY_MAX_FEATURES, with_mirror=True)
    assert not verify(query, astronaut_features).accepted


def test_a_second_look_undoes_a_stretch_and_finds_nothing_in_an_unrelated_picture(
        astronaut: Image.Image, astronaut_features: Features) -> None:
    w, h = astronaut.size
    stretched = astronaut.resize((round(w * 1.6), h), Image.Resampling.BILINEAR).crop((40, 30, round(w * 1.6), h))
    looks = geo.second_look_features(stretched, astronaut_features)
    assert [name for name, _ in looks] == ["aspect"]
    accepted = [verify(f, astronaut_features) for _, f in looks]
    assert accepted[0].accepted, accepted[0].reason
    edit = accepted[0].edit
    assert edit is not None and 1.4 < edit.aspect_change < 1.8  # reported in the query's own pixels
    # Same proportions: nothing to undo. An unrelated stretched picture: undone, still rejected.
    assert geo.second_look_features(astronaut, astronaut_features) == []
    other = photo("coffee")
    other = other.resize((round(other.width * 1.6), other.height))
    assert not any(verify(f, astronaut_features).accepted for _, f in geo.second_look_features(other, astronaut_features))


def test_a_pixel_shuffled_copy_is_verified_at_low_resolution_and_an_unrelated_one_is_not(
        astronaut: Image.Image, astronaut_features: Features) -> None:
    from bench.chains import EDITS

    def shuffled(image: Image.Image) -> Image.Image:  # 15-40 % of small blocks trade places
        return EDITS["shuffle"](image, np.random.default_rng(1), lambda rng: image)

    query = extract_features(shuffled(astronaut), max_features=geo.DEFAULT_QUERY_MAX_FEATURES, with_mirror=True)
    assert not verify(query, astronaut_features, min_inliers=12).accepted  # the keypoints are gone
    low_reference = geo.low_resolution_features(astronaut_features)
    low_query = geo.low_resolution_features(query, with_mirror=True)
    assert low_reference is not None and low_query is not None and low_query.mirror is not None
    assert (low_query.width, low_query.height) == (query.width, query.height)  # the same frame
    v = verify(low_query, low_reference, min_inliers=12, min_appearance=geo.LOW_RES_APPEARANCE)
    assert v.accepted, v.reason
    assert v.edit is not None and v.edit.scale == pytest.approx(1.0, abs=0.05) and abs(v.edit.rotation_deg) < 2
    for name in ("coffee", "chelsea", "rocket", "scribble-1", "drawn_logo"):
        other = extract_features(shuffled(photo(name)), max_features=geo.DEFAULT_QUERY_MAX_FEATURES)
        low_other = geo.low_resolution_features(other, with_mirror=True)
        assert low_other is not None
        assert not verify(low_other, low_reference, min_inliers=12).accepted, name
    assert geo.low_resolution_features(replace(astronaut_features, thumb=None)) is None


def _word_mark(text: str) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    tile = Image.new("RGB", (256, 256), (255, 255, 255))
    ImageDraw.Draw(tile).text((128, 128), text, fill=(40, 40, 50), font=ImageFont.load_default(size=40), anchor="mm")
    return tile


@pytest.mark.parametrize(("reference", "query", "box"), [
    ("appsmith_", "about.me", None),
    ("appsmith_", "about.me", (0, 60, 200, 200)),
    ("mastodon", "amazon", None),
    ("mastodon", "amazon", (30, 30, 226, 226)),
])
def test_the_low_resolution_look_rejects_another_word_mark_in_the_same_font(
        reference: str, query: str, box: tuple[int, int, int, int] | None) -> None:
    # Words sharing letters in one font: the filtered thumbnails fit with 16-28 inliers and
    # correlate 0.60-0.75, so the look asks for more than the usual appearance (the per-attack
    # benchmark's "appsmith_" logo matched "about.me" at 0.62).
    image = _word_mark(query) if box is None else _word_mark(query).crop(box)
    low_query = geo.low_resolution_features(extract_features(image, max_features=geo.DEFAULT_QUERY_MAX_FEATURES),
                                            with_mirror=True)
    low_reference = geo.low_resolution_features(extract_features(_word_mark(reference)))
    assert low_query is not None and low_reference is not None
    assert not verify(low_query, low_reference, min_inliers=12, min_appearance=geo.LOW_RES_APPEARANCE).accepted
    # The word mark itself, shuffled, is still found.
    from bench.chains import EDITS

    mark = _word_mark(reference)
    shuffled = EDITS["shuffle"](mark, np.random.default_rng(0), lambda rng: mark)
    low_copy = geo.low_resolution_features(extract_features(shuffled, max_features=geo.DEFAULT_QUERY_MAX_FEATURES))
    assert low_copy is not None
    assert verify(low_copy, low_reference, min_inliers=12, min_appearance=geo.LOW_RES_APPEARANCE).accepted


def test_forty_agreeing_inliers_need_no_look_alike_check(astronaut, astronaut_features, monkeypatch) -> None:
    """The aligned thumbnails' correlation rejects chance fits of a dozen inliers; a fit that
    APPEARANCE_WAIVED inliers or more agree on is a copy whatever a sticker or a texture did to
    its thumbnail. Shown with a bar no copy reaches (0.999): the resized copy is accepted on its
    inliers, and rejected by the check once the waiver is out of reach."""
    query = astronaut.resize((400, 400))
    features = extract_features(query, max_features=geo.DEFAULT_QUERY_MAX_FEATURES)
    v = verify(features, astronaut_features, min_appearance=0.999)
    assert v.accepted and v.inliers >= geo.APPEARANCE_WAIVED and v.appearance is not None and v.appearance < 0.999
    monkeypatch.setattr(geo, "APPEARANCE_WAIVED", 10**6)
    rejected = verify(features, astronaut_features, min_appearance=0.999)
    assert not rejected.accepted and "do not look alike" in rejected.reason
