"""Geometric verification of a candidate copy with OpenCV local features.

``extract_features`` turns a picture into keypoints and descriptors (cache the
protected images' features: ``features_to_bytes`` / ``features_from_bytes``);
``verify`` matches a suspect image's features against one reference's, fits a
RANSAC homography (falling back to a similarity transform) and either rejects
the pair with a reason or returns where the copy sits in both images and what
was done to it (:class:`EditReport`).

Coordinates are original image pixels with the corner convention: a W x H
image spans [0, W] x [0, H], pixel (i, j) has its centre at (i + 0.5, j + 0.5),
y points down. ``Verification.transform`` maps reference to query coordinates.

Local descriptors are not mirror-invariant, so mirrored copies are found by
also matching mirrored features: descriptors computed on the horizontally
flipped picture, keypoints mapped back into the unflipped frame. A transform
fitted through them has a negative determinant, which is how ``verify`` knows
the copy is mirrored. Compute them on the query side (``with_mirror=True``)
or, to keep query latency down, store them with the references.

The choice of detector, thresholds and the acceptance rules were measured with
``python -m bench.features``; see docs/geometry.md.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "DEFAULT_KIND",
    "DEFAULT_MAX_FEATURES",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_INLIERS",
    "DEFAULT_QUERY_MAX_FEATURES",
    "KINDS",
    "MIN_INLIERS",
    "EditReport",
    "Features",
    "Verification",
    "aligned_verification",
    "crop_verification",
    "edit_from_transform",
    "extract_features",
    "features_from_bytes",
    "features_to_bytes",
    "low_resolution_features",
    "mirror_features",
    "LOW_RES_APPEARANCE",
    "LOW_RES_BLUR",
    "LOW_RES_MEDIAN",
    "LOW_RES_SIDE",
    "SECOND_LOOK_APPEARANCE",
    "SECOND_LOOK_RATIO",
    "second_look_features",
    "verify",
]

KINDS = ("orb", "akaze", "sift")
DEFAULT_KIND = "orb"  # measured: docs/geometry.md
DEFAULT_MAX_SIDE = 640
DEFAULT_MAX_FEATURES = 1000
# Suspect images get more: a copy that fills a quarter of a collage or a logo
# pasted small gets its share of keypoints (measured: +1 point of true
# accepts, same false accepts, ~2x the matching time).
DEFAULT_QUERY_MAX_FEATURES = 2000
# Orientation- and size-consistent inliers needed to accept, per kind; with
# the other rules below they keep false accepts at about 1 in 24,000 unrelated
# pairs (ORB) and 0 in 3,900 (AKAZE, SIFT): docs/geometry.md.
MIN_INLIERS = {"orb": 10, "akaze": 8, "sift": 8}
DEFAULT_MIN_INLIERS = MIN_INLIERS[DEFAULT_KIND]
DEFAULT_METHOD = "magsac"  # homography estimator, measured against plain RANSAC
DEFAULT_CLAHE = False
# Pictures smaller than this are upscaled before detection: ORB ignores a
# 19 px border and needs some pyramid levels, so a 150 px thumbnail otherwise
# yields a few dozen keypoints.
DEFAULT_MIN_SIDE = 320
THUMB_SIDE = 192  # long side of the grey thumbnail kept for the appearance check
# Fewer keypoints than this on either side: nothing can be verified.
MIN_KEYPOINTS = 8
FORMAT_VERSION = 1

# Matching and RANSAC, in processed-image pixels / plain ratios (measured).
_RATIO = {"orb": 0.75, "akaze": 0.8, "sift": 0.8}
_RANSAC_PX = 5.0
_RANSAC_ITERS = 2000
_CONFIDENCE = 0.999
# Acceptance rules; each rejects a kind of degenerate or chance fit.
_MIN_SCALE, _MAX_SCALE = 0.03, 30.0
_MAX_ASPECT = 3.0  # x/y stretch beyond this is a chance fit, not an edit
_MAX_PERSPECTIVE = 2.5  # max/min homogeneous w over the visible region
_PERSPECTIVE_FLAG = 1.08  # w ratio above which the report says "perspective"
_MIN_REGION_PX = 16.0  # side of the smallest believable copy, processed px
_MIN_SPREAD = 0.04  # inlier hull / hull of the reference keypoints in the visible region
_SAMPLE = 40
# Appearance check: thumbnails aligned by the fit must correlate (see _appearance).
_MIN_APPEARANCE = 0.6
# ... unless this many inliers agree (in orientation and size, on one fit): no unrelated pair of the
# benchmarks reached 25, and copies under a sticker, on a textured surface or blended reached 40-670
# while their aligned thumbnails correlated under the bar.
APPEARANCE_WAIVED = 40
_MIN_APPEARANCE_PX = 64
_APPEARANCE_GRID = 4
# Keypoint orientation / size agreement with the fitted transform (see _consistent).
_MAX_TURN_DEG = 30.0
_MAX_LOG2_SIZE = 1.0

FloatArray = npt.NDArray[np.float32]


@dataclass
class Features:
    """Local features of one picture.

    ``keypoints`` (n, 2) float32 in original pixel coordinates; ``sizes`` and
    ``angles`` (n,) float32 (diameter in original pixels, degrees as OpenCV
    reports them) or None; ``descriptors`` (n, d): uint8 for the binary kinds
    (ORB 32 bytes, AKAZE 61 bytes), float32 for SIFT (128). ``pixel_scale`` is
    original pixels per processed pixel (RANSAC tolerances scale with it).
    ``thumb`` is a small grey copy of the whole (unflipped) picture, long side
    <= THUMB_SIDE, for the appearance check of :func:`verify`. ``mirror``
    holds the features of the horizontally flipped picture, with keypoints
    mapped back into this picture's frame, when they were computed.
    """

    kind: str
    width: int
    height: int
    keypoints: FloatArray
    descriptors: npt.NDArray[Any]
    sizes: FloatArray | None = None
    angles: FloatArray | None = None
    pixel_scale: float = 1.0
    mirror: Features | None = None
    thumb: npt.NDArray[np.uint8] | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


@dataclass
class EditReport:
    """What was done to the reference to make the copy.

    ``scale`` is linear (query size / reference size); ``rotation_deg`` is
    counter-clockwise as seen (PIL ``Image.rotate`` convention), in
    (-180, 180]; when ``mirrored`` the rotation is applied after a horizontal
    flip. ``visible_fraction`` is the share of the reference's area present in
    the query (crop), ``query_coverage`` the share of the query's area the
    copy covers, ``aspect_change`` the x/y stretch ratio (1 = proportions
    kept), ``perspective`` whether the fit is clearly non-affine.
    """

    scale: float
    rotation_deg: float
    mirrored: bool
    visible_fraction: float
    query_coverage: float
    aspect_change: float
    perspective: bool

    def describe(self) -> str:
        parts: list[str] = []
        if abs(self.scale - 1) >= 0.03:
            parts.append(f"scaled to {self.scale * 100:.0f} %")
        if abs(self.rotation_deg) >= 1:
            way = "counter-clockwise" if self.rotation_deg > 0 else "clockwise"
            parts.append(f"rotated {abs(self.rotation_deg):.0f}° {way}")
        if self.mirrored:
            parts.append("mirrored")
        if abs(math.log(self.aspect_change)) >= math.log(1.05):
            axis = "horizontally" if self.aspect_change > 1 else "vertically"
            parts.append(f"stretched {max(self.aspect_change, 1 / self.aspect_change):.2f}x {axis}")
        if self.perspective:
            parts.append("perspective-warped")
        if self.visible_fraction < 0.97:
            parts.append(f"cropped to {self.visible_fraction * 100:.0f} % of the original")
        if self.query_coverage < 0.9:
            parts.append(f"covers {self.query_coverage * 100:.0f} % of the suspect image")
        return ", ".join(parts) if parts else "no geometric change"

    def as_json(self) -> dict[str, Any]:
        return {
            "scale": round(self.scale, 4),
            "rotation_deg": round(self.rotation_deg, 2),
            "mirrored": self.mirrored,
            "visible_fraction": round(self.visible_fraction, 4),
            "query_coverage": round(self.query_coverage, 4),
            "aspect_change": round(self.aspect_change, 4),
            "perspective": self.perspective,
            "description": self.describe(),
        }


@dataclass
class Verification:
    """The outcome of :func:`verify`.

    A rejected pair keeps ``inliers``/``inlier_ratio`` of its best attempt
    (for calibration) and has empty geometry and ``edit=None``. Polygons list
    [x, y] vertices: ``query_polygon`` is the reference's outline mapped into
    the query and clipped to its frame, ``reference_polygon`` the part of the
    reference that is visible in the query. ``matches_sample`` holds up to 40
    inlier correspondences (x_q, y_q, x_r, y_r) for drawing. ``spread`` is
    the area the inliers span in the reference over the area its keypoints
    span in the visible region (1 = the evidence covers the whole copy);
    ``appearance`` the correlation of the aligned grey thumbnails over the
    copied region (None when it could not be judged); for a mark (model
    ``"mark"``) that of the mark's inner detail (``marks._detail``).
    """

    accepted: bool
    reason: str
    inliers: int = 0
    inlier_ratio: float = 0.0
    transform: list[list[float]] = field(default_factory=list)
    model: str = ""
    query_polygon: list[list[float]] = field(default_factory=list)
    reference_polygon: list[list[float]] = field(default_factory=list)
    edit: EditReport | None = None
    matches_sample: list[tuple[float, float, float, float]] = field(default_factory=list)
    spread: float = 0.0
    appearance: float | None = None

    def as_json(self) -> dict[str, Any]:
        def pts(poly: list[list[float]]) -> list[list[float]]:
            return [[round(x, 2), round(y, 2)] for x, y in poly]

        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "inliers": self.inliers,
            "inlier_ratio": round(self.inlier_ratio, 4),
            "model": self.model or None,
            "transform": self.transform or None,
            "query_polygon": pts(self.query_polygon),
            "reference_polygon": pts(self.reference_polygon),
            "edit": self.edit.as_json() if self.edit else None,
            "matches_sample": [[round(v, 2) for v in m] for m in self.matches_sample],
            "spread": round(self.spread, 4),
            "appearance": None if self.appearance is None else round(self.appearance, 4),
        }


# --------------------------------------------------------------------------
# Extraction


def _gray(image: Image.Image, max_side: int, min_side: int, clahe: bool) -> tuple[npt.NDArray[Any], float, float]:
    """8-bit grey pixels resized so the long side is <= max_side and, for
    small pictures, >= min_side; plus original px per processed px in x, y."""
    import cv2

    w, h = image.size
    gray = np.asarray(image.convert("L"))
    long_side = max(w, h)
    k = 1.0
    if long_side > max_side:
        k = max_side / long_side
    elif long_side < min_side:
        k = min(min_side / long_side, 4.0)
    if k != 1.0:
        pw, ph = max(1, round(w * k)), max(1, round(h * k))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (pw, ph), interpolation=interp)
    if clahe:
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    return np.ascontiguousarray(gray), w / gray.shape[1], h / gray.shape[0]


def _detector(kind: str, max_features: int) -> Any:
    import cv2

    if kind == "orb":
        # More pyramid levels than the default 8 reach 30 % thumbnails.
        return cv2.ORB.create(nfeatures=max_features, scaleFactor=1.2, nlevels=10,
                              edgeThreshold=19, patchSize=19, fastThreshold=12)
    if kind == "akaze":
        return cv2.AKAZE.create(threshold=0.0008)
    if kind == "sift":
        return cv2.SIFT.create(nfeatures=max_features)
    raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")


def _detect(gray: npt.NDArray[Any], kind: str, max_features: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Keypoints (processed px, corner convention), sizes, angles, descriptors."""
    kps, desc = _detector(kind, max_features).detectAndCompute(gray, None)
    width = {"orb": 32, "akaze": 61, "sift": 128}[kind]
    if not kps or desc is None:
        empty = np.zeros(0, np.float32)
        return (np.zeros((0, 2), np.float32), empty, empty.copy(),
                np.zeros((0, width), np.float32 if kind == "sift" else np.uint8))
    if len(kps) > max_features:  # AKAZE has no feature cap of its own
        keep = np.argsort([-k.response for k in kps], kind="stable")[:max_features]
        kps = [kps[i] for i in keep]
        desc = desc[keep]
    xy = np.array([k.pt for k in kps], np.float32) + 0.5  # OpenCV: pixel centres at integers
    sizes = np.array([k.size for k in kps], np.float32)
    angles = np.array([k.angle for k in kps], np.float32)
    return xy, sizes, angles, np.ascontiguousarray(desc)


def extract_features(
    image: Image.Image,
    *,
    kind: str = DEFAULT_KIND,
    max_side: int = DEFAULT_MAX_SIDE,
    max_features: int = DEFAULT_MAX_FEATURES,
    min_side: int = DEFAULT_MIN_SIDE,
    clahe: bool = DEFAULT_CLAHE,
    with_mirror: bool = False,
    frame: tuple[int, int] | None = None,
) -> Features:
    """Local features of ``image`` (any PIL mode), detected on a grey copy
    resized into [min_side, max_side] on its long side, coordinates mapped
    back to the original pixels. ``clahe`` equalises local contrast first.
    ``with_mirror`` also fills ``.mirror``. ``frame`` is the size of the
    picture ``image`` was reduced from (``LoadedImage.width``/``height``):
    coordinates, and so regions and edit reports, are then in its pixels."""
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")
    gray, sx, sy = _gray(image, max_side, min_side, clahe)
    (sx, sy), size = _in_frame(image, frame, sx, sy)
    feats = _build(gray, False, sx, sy, size, kind, max_features)
    feats.thumb = _thumb(gray)
    if with_mirror:
        feats.mirror = _build(gray, True, sx, sy, size, kind, max_features)
        feats.mirror.thumb = feats.thumb
    return feats


def _in_frame(image: Image.Image, frame: tuple[int, int] | None, sx: float,
              sy: float) -> tuple[tuple[float, float], tuple[int, int]]:
    """Scales from processed pixels to ``frame``'s pixels, and the frame's size."""
    if frame is None or tuple(frame) == image.size:
        return (sx, sy), image.size
    return (sx * frame[0] / image.width, sy * frame[1] / image.height), (int(frame[0]), int(frame[1]))


DEFAULT_REGION_SIDE = 480  # a region of the query is processed at this long side (upscaled up to 4x)


def extract_region_features(
    image: Image.Image,
    box: tuple[int, int, int, int],
    *,
    kind: str = DEFAULT_KIND,
    side: int = DEFAULT_REGION_SIDE,
    max_features: int = DEFAULT_MAX_FEATURES,
    clahe: bool = DEFAULT_CLAHE,
    with_mirror: bool = False,
    thumb: npt.NDArray[np.uint8] | None = None,
    frame: tuple[int, int] | None = None,
) -> Features:
    """Features of the part ``box`` = (x0, y0, x1, y1) of ``image``, detected
    on that part alone, resized so its long side is ``side`` (a small pasted
    logo gets the pixels and the keypoint budget that the whole picture would
    spend elsewhere), with coordinates in the **whole** picture's frame, so
    :func:`verify` reports the region and the edit relative to the whole
    picture. ``thumb`` is the whole picture's appearance thumbnail (from its
    own features); without it the appearance check is skipped. ``box`` is in
    ``image``'s pixels, the coordinates in ``frame``'s (see :func:`extract_features`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(image.width, x1), min(image.height, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f"empty region {box!r} in a {image.width}x{image.height} image")
    gray, sx, sy = _gray(image.crop((x0, y0, x1, y1)), side, side, clahe)
    (fx, fy), size = _in_frame(image, frame, 1.0, 1.0)

    def build(flipped: bool) -> Features:
        f = _build(gray, flipped, sx * fx, sy * fy, size, kind, max_features)
        f.keypoints[:, 0] += x0 * fx
        f.keypoints[:, 1] += y0 * fy
        f.thumb = thumb
        return f

    feats = build(False)
    if with_mirror:
        feats.mirror = build(True)
    return feats


# Second looks (copies edited several times over, docs/geometry.md): proportions differing from the
# reference's by more than this are worth undoing before a second extraction; and a second look
# matches with a looser Lowe ratio (a chain of edits leaves true matches less distinct), which
# the orientation/size agreement, RANSAC and the acceptance rules still filter.
_SECOND_LOOK_ASPECT = 1.1
SECOND_LOOK_RATIO = {"orb": 0.85, "akaze": 0.85, "sift": 0.85}
# ... and accepts aligned pictures that correlate less: stripes, text and emoji laid over a copy
# spoil more than half of the appearance grid's cells.
SECOND_LOOK_APPEARANCE = 0.45


def second_look_features(
    image: Image.Image,
    reference: Features,
    *,
    kind: str = DEFAULT_KIND,
    max_features: int = DEFAULT_QUERY_MAX_FEATURES,
    frame: tuple[int, int] | None = None,
) -> list[tuple[str, Features]]:
    """Other extractions of a query that a first :func:`verify` against ``reference`` did not
    confirm, each named; empty when none applies. ``"aspect"``: the query stretched back to the
    reference's proportions (a copy squeezed or stretched, often then cropped or framed: ORB's
    descriptors are not affine-invariant, so a 1.3-1.6x stretch loses most matches); coordinates
    stay in the query's frame, so :func:`verify` reports the region and the edit as usual. With
    mirrored features, like the whole query's in the partial-copy pass."""
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")
    looks: list[tuple[str, Features]] = []
    w, h = image.size
    ref_aspect, aspect = reference.width / reference.height, w / h
    if abs(math.log(ref_aspect / aspect)) > math.log(_SECOND_LOOK_ASPECT):
        size = (w, max(1, round(w / ref_aspect))) if aspect > ref_aspect else (max(1, round(h * ref_aspect)), h)
        looks.append(("aspect", extract_features(image.resize(size, Image.Resampling.BILINEAR), kind=kind,
                                                 max_features=max_features, with_mirror=True,
                                                 frame=frame or image.size)))
    return looks


# The crop look (docs/geometry.md, "The crop look"): a query that is a part of the reference cut out
# (a corner crop, often rescaled, recoloured or compressed) keeps too few keypoints on a logo's
# flat shapes for the inlier count, but its pixels are the reference's. Its grey thumbnail is
# searched in the reference's at CROP_SCALES sizes, between CROP_AREA of the reference's area, by
# normalised cross-correlation (OpenCV's TM_CCOEFF_NORMED) of both thumbnails lightly blurred;
# accepted at CROP_MIN_NCC over at least CROP_MIN_SIDE thumbnail pixels a side with a grey spread
# of CROP_MIN_STD (a crop of flat background proves nothing), when the edge maps there correlate at
# CROP_MIN_EDGE_NCC too: a plain silhouette correlates with any blob of its size in grey (the
# per-attack benchmark's `braintrust` blob in `dunked`'s disc at 0.95, `localsend`'s at 0.91),
# not in its outline (0.82, 0.56; the benchmark's crops: 0.87-0.99). A fifth of the reference at
# least (CROP_AREA): smaller parts of a logo are generic shapes.
CROP_AREA = (0.2, 1.0)
CROP_MIN_EDGE_NCC = 0.75
CROP_COARSE = 4  # the first search's thumbnails are this many times smaller
CROP_SCALES = 16
CROP_MIN_SIDE = 40
CROP_MIN_STD = 12.0
CROP_MIN_NCC = 0.9
_CROP_BLUR = 1.0


class _Searched:
    """A picture searched by normalised cross-correlation with several templates: its spectrum
    and its integral tables computed once (``scores`` is OpenCV's ``TM_CCOEFF_NORMED``)."""

    def __init__(self, image: npt.NDArray[Any]) -> None:
        self.image = np.asarray(image, dtype=np.float64)
        self.spectrum = np.fft.rfft2(self.image)
        self.ii = np.pad(self.image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.ii2 = np.pad((self.image * self.image).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def scores(self, template: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """The correlation at every valid placement of ``template``; a flat window scores 0."""
        (ih, iw) = self.image.shape
        t = np.asarray(template, dtype=np.float64)
        th, tw = t.shape
        n = float(th * tw)
        t = t - t.mean()
        t_energy = float((t * t).sum())
        if t_energy <= 1e-9:
            return np.zeros((ih - th + 1, iw - tw + 1))
        spectrum = self.spectrum * np.conj(np.fft.rfft2(t, s=(ih, iw)))
        numerator = np.fft.irfft2(spectrum, s=(ih, iw))[: ih - th + 1, : iw - tw + 1]
        ii, ii2 = self.ii, self.ii2
        s1 = ii[th:, tw:] - ii[:-th, tw:] - ii[th:, :-tw] + ii[:-th, :-tw]
        s2 = ii2[th:, tw:] - ii2[:-th, tw:] - ii2[th:, :-tw] + ii2[:-th, :-tw]
        window_energy = np.maximum(s2 - s1 * s1 / n, 0.0)
        denominator = np.sqrt(window_energy * t_energy)
        out: npt.NDArray[np.float64] = np.where(denominator > 1e-6 * t_energy,
                                                numerator / np.maximum(denominator, 1e-12), 0.0)
        return out


def _ncc_valid(image: npt.NDArray[Any], template: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """OpenCV's ``TM_CCOEFF_NORMED`` over the valid placements, by numpy's FFT: the same values to
    rounding, without ``cv2.matchTemplate``'s fixed cost (about 1.5 ms a call here, whatever the
    size, against 0.05-0.5 ms for these thumbnails). A flat window scores 0."""
    return _Searched(image).scores(template)


def _best_place(scores: npt.NDArray[np.float64]) -> tuple[float, tuple[int, int]]:
    """The highest score and its (x, y)."""
    y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[y, x]), (int(x), int(y))


def _correlation(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Pearson correlation of two same-sized arrays (0 when either is flat)."""
    x = a.astype(np.float64).ravel() - float(a.mean())
    y = b.astype(np.float64).ravel() - float(b.mean())
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator > 1e-9 else 0.0


def _edge_correlation(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Pearson correlation of two same-sized pictures' gradient magnitudes (Sobel)."""
    import cv2

    def edges(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)
        m: npt.NDArray[np.float64] = np.sqrt(gx * gx + gy * gy).astype(np.float64)
        return m

    return _correlation(edges(a), edges(b))


def crop_verification(query: Features, reference: Features) -> Verification | None:
    """The query as a part of the reference, uniformly scaled and not turned (a crop): accepted
    (model ``"crop"``, ``inlier_ratio`` and ``appearance`` the correlation, the reference polygon
    the part found, the query polygon the whole query), or None when no size correlates at
    ``CROP_MIN_NCC``. Needs both thumbnails (references from storage carry theirs)."""
    import cv2

    if query.thumb is None or reference.thumb is None:
        return None
    qt = cv2.GaussianBlur(query.thumb.astype(np.float32), (0, 0), _CROP_BLUR)
    rt = cv2.GaussianBlur(reference.thumb.astype(np.float32), (0, 0), _CROP_BLUR)
    (qh, qw), (rh, rw) = qt.shape, rt.shape
    # Template sizes (query thumbnail scaled by s) whose area is CROP_AREA of the reference's.
    fit = min(rw / qw, rh / qh)
    low = math.sqrt(CROP_AREA[0] * rw * rh / (qw * qh))
    high = min(fit, math.sqrt(CROP_AREA[1] * rw * rh / (qw * qh)))
    if high < low:
        return None
    # Coarse to fine: every size on both thumbnails shrunk CROP_COARSE times (the correlation's work
    # falls with the square of the pixels), then the two best places at full size, their size and
    # its neighbours, within a few pixels of the coarse place.
    f = CROP_COARSE
    qs = cv2.resize(qt, (max(1, qw // f), max(1, qh // f)), interpolation=cv2.INTER_AREA)
    rs = cv2.resize(rt, (max(1, rw // f), max(1, rh // f)), interpolation=cv2.INTER_AREA)
    found: list[tuple[float, float, tuple[int, int]]] = []
    searched = _Searched(rs)
    step = (high / low) ** (1 / max(CROP_SCALES - 1, 1))
    for i in range(CROP_SCALES):
        s = low * step ** i
        tw, th = min(rs.shape[1], max(1, round(qs.shape[1] * s))), min(rs.shape[0], max(1, round(qs.shape[0] * s)))
        if min(tw, th) < max(4, CROP_MIN_SIDE // f):
            continue
        template = cv2.resize(qs, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        if float(template.std()) < CROP_MIN_STD / 2:
            continue
        score, at = _best_place(searched.scores(template))
        if np.isfinite(score):
            found.append((float(score), s, (f * int(at[0]), f * int(at[1]))))
    best: tuple[float, tuple[int, int], npt.NDArray[Any]] | None = None  # score, place, template
    margin = 2 * f  # full-size thumbnail pixels around a coarse place
    for _coarse_score, coarse_s, (cx, cy) in sorted(found, reverse=True)[:2]:
        for k in (-1, 0, 1):  # the coarse size and a third of a step either side
            s = coarse_s * step ** (k / 3)
            tw, th = min(rw, max(1, round(qw * s))), min(rh, max(1, round(qh * s)))
            if not low * 0.97 <= s <= high * 1.03 or min(tw, th) < CROP_MIN_SIDE:
                continue
            template = cv2.resize(qt, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            if float(template.std()) < CROP_MIN_STD:
                continue
            x0, y0 = max(0, cx - margin), max(0, cy - margin)
            window = rt[y0:min(rh, cy + th + margin), x0:min(rw, cx + tw + margin)]
            if window.shape[0] < th or window.shape[1] < tw:
                continue
            score, at = _best_place(_ncc_valid(window, template))
            if np.isfinite(score) and (best is None or score > best[0]):
                best = (float(score), (x0 + int(at[0]), y0 + int(at[1])), template)
    if best is None or best[0] < CROP_MIN_NCC:
        return None
    score, (x, y), template = best
    th, tw = template.shape
    if _edge_correlation(rt[y:y + th, x:x + tw], template) < CROP_MIN_EDGE_NCC:
        return None
    kx, ky = reference.width / rw, reference.height / rh  # reference pixels per thumbnail pixel
    x0, y0, x1, y1 = x * kx, y * ky, (x + tw) * kx, (y + th) * ky
    ref_poly = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    query_poly = [[0.0, 0.0], [float(query.width), 0.0], [float(query.width), float(query.height)],
                  [0.0, float(query.height)]]
    sx, sy = query.width / max(x1 - x0, 1e-9), query.height / max(y1 - y0, 1e-9)
    transform = [[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy], [0.0, 0.0, 1.0]]  # reference -> query pixels
    edit = EditReport(scale=math.sqrt(sx * sy), rotation_deg=0.0, mirrored=False,
                      visible_fraction=min(1.0, (tw * th) / float(rw * rh)), query_coverage=1.0,
                      aspect_change=sx / sy, perspective=False)
    return Verification(True, "crop", 0, score, transform=transform, model="crop", query_polygon=query_poly,
                        reference_polygon=ref_poly, edit=edit, spread=1.0, appearance=score)


# The aligned look (docs/geometry.md, "The aligned look"): a copy whose keypoints do not survive
# (a logo's flat shapes stretched, turned a few degrees, padded or framed, cut and mirrored) but
# whose pixels are the reference's under one affine or projective map. The grey thumbnails are
# blurred and shrunk to ALIGN_COARSE_SIDE; three starting places are scored by normalised
# cross-correlation: the query stretched onto the reference (proportions changed, a frame), the
# reference searched inside the query at ALIGN_INSIDE shares of the fit (padding, a frame, a
# small copy), the query searched inside the reference at ALIGN_CROP shares (a crop). The best is
# refined by OpenCV's ECC (Evangelidis and Psarakis 2008: the alignment that maximises the same
# correlation), affine then projective, and judged at ALIGN_FINE_SIDE: the aligned pictures'
# correlation at least ALIGN_MIN_NCC and their edge maps' at least ALIGN_MIN_EDGE_NCC (a plain
# disc aligns with any other disc in grey, not in outline), over a template of at least
# CROP_MIN_SIDE pixels a side with a grey spread of CROP_MIN_STD, the map within the verifier's
# bounds on scale and stretch. Measured on the chains suite's development seed: docs/geometry.md.
ALIGN_COARSE_SIDE = 64
ALIGN_FINE_SIDE = 128
ALIGN_AFFINE_ITERATIONS = 15
ALIGN_PROJECTIVE_ITERATIONS = 10
ALIGN_INSIDE = (0.15, 0.95, 8)  # shares of the largest fit: first, last, how many (geometric)
ALIGN_CROP = (0.45, 1.0, 5)
ALIGN_MIN_NCC = 0.9
ALIGN_TRIES = 1  # starting places refined, best first (2: +25 % time, no more found on the development seed)
ALIGN_MIN_COARSE = 0.7  # the affine alignment's correlation at the coarse size, to go on
ALIGN_MIN_EDGE_NCC = 0.75
# The median look (pixel shuffling, docs/geometry.md "The aligned look"): both thumbnails
# median-filtered over ALIGN_MEDIAN pixels first (a traded block of 1-2 % of the long side is 2-4
# thumbnail pixels: most of a 7-pixel window's blocks are in place; the low-resolution look's
# LOW_RES_MEDIAN, measured the same way), the edge maps judged at ALIGN_MEDIAN_MIN_EDGE_NCC (the
# filter rounds the outlines of both). On the chains suite's development seed: 4 more copies, no
# false look among 2,500 (unrelated pairs reached 0.59 in edges where they correlated at 0.85).
ALIGN_MEDIAN = 7
ALIGN_MEDIAN_MIN_EDGE_NCC = 0.7
# The turned look: the plain starts are upright, and ECC turns a start by a few degrees at most;
# a copy turned further starts from the reference turned by each of these (degrees, counter-
# clockwise; every angle of 5-45 degrees within 5 of one) and placed in the query at
# ALIGN_TURNED_INSIDE (shares of its largest fit: a turned copy's frame grows around it).
ALIGN_TURNS = (-40.0, -30.0, -20.0, -10.0, 10.0, 20.0, 30.0, 40.0)
ALIGN_TURNED_INSIDE = (0.5, 1.0, 4)
ALIGN_TURNED_TRIES = 2  # turned starts refined, best first (the turned grey corners blur their scores)
_ALIGN_MIN_VALID = 0.9  # of the template's pixels the aligned picture must cover


def _shrunk(image: npt.NDArray[Any], side: int) -> npt.NDArray[np.float32]:
    import cv2

    k = side / max(image.shape)
    size = (max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.float32)


def _place(big: npt.NDArray[Any], small: npt.NDArray[Any], shares: tuple[float, float, int],
           searched: _Searched | None = None) -> tuple[float, npt.NDArray[np.float64]] | None:
    """The best correlation of ``small`` scaled to ``shares`` of its largest fit inside ``big``,
    and the map from ``small``'s pixels to ``big``'s there (``searched``: ``big``'s, when made)."""
    import cv2

    fit = min(big.shape[1] / small.shape[1], big.shape[0] / small.shape[0])
    searched = searched if searched is not None else _Searched(big)
    best: tuple[float, npt.NDArray[np.float64]] | None = None
    for share in np.geomspace(shares[0], shares[1], shares[2]):
        s = float(share) * fit
        tw, th = round(small.shape[1] * s), round(small.shape[0] * s)
        if min(tw, th) < 8:
            continue
        template = cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA)
        if float(template.std()) < CROP_MIN_STD / 2:
            continue
        score, (x, y) = _best_place(searched.scores(template))
        if best is None or score > best[0]:
            best = (score, np.array([[s, 0.0, x], [0.0, s, y], [0.0, 0.0, 1.0]]))
    return best


def _ecc(template: npt.NDArray[Any], image: npt.NDArray[Any], start: npt.NDArray[Any], projective: bool,
         iterations: int) -> tuple[float, npt.NDArray[np.float64]] | None:
    """ECC's correlation and map from ``template``'s pixels to ``image``'s (3x3), from ``start``;
    None when it does not converge to a map the verifier believes (scale, stretch, orientation kept)."""
    import cv2

    motion = cv2.MOTION_HOMOGRAPHY if projective else cv2.MOTION_AFFINE
    warp = np.asarray(start if projective else start[:2], np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4)
    try:
        # The stubs lack the overload with ``gaussFiltSize`` (1: the thumbnails are blurred already).
        cc, found = cv2.findTransformECC(template, image, warp, motion, criteria, None, 1)  # type: ignore[call-overload]
    except cv2.error:  # diverged, or a flat picture
        return None
    h = np.vstack([found, [0.0, 0.0, 1.0]]) if not projective else np.asarray(found, np.float64)
    linear = _jacobian(h, template.shape[1] / 2, template.shape[0] / 2)
    det = float(np.linalg.det(linear))
    if not np.all(np.isfinite(h)) or det <= 0:
        return None
    s = np.linalg.svd(linear, compute_uv=False)
    if not (_MIN_SCALE <= math.sqrt(det) <= _MAX_SCALE and s[0] / s[1] <= _MAX_ASPECT):
        return None
    return float(cc), np.asarray(h, np.float64)


def aligned_verification(query: Features, reference: Features, *, mirrored: bool = True,
                         median: bool = False, turned: bool = False) -> Verification | None:
    """The query as the reference under one affine or projective map (stretched, turned, padded,
    framed, cut), found by aligning the grey thumbnails (ECC) rather than by keypoints: accepted
    (model ``"aligned"``, ``inlier_ratio`` and ``appearance`` the correlation, the polygons and the
    edit report as :func:`verify` gives them), or None. ``mirrored``: the query's mirror image is a
    starting place too (the better start is refined, one alignment a call). ``median``: the median
    look, both thumbnails median-filtered first (``ALIGN_MEDIAN``; pixel shuffling). ``turned``: the
    turned look, whose starting places are the reference turned by ``ALIGN_TURNS`` and searched
    inside the query (a copy turned by more than the plain start's ECC recovers). Needs both
    thumbnails."""
    import cv2

    if query.thumb is None or reference.thumb is None:
        return None

    def prepared(thumb: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if median:
            thumb = cv2.medianBlur(np.ascontiguousarray(thumb, np.uint8), ALIGN_MEDIAN)
        return np.asarray(cv2.GaussianBlur(np.ascontiguousarray(thumb, np.float32), (0, 0), _CROP_BLUR), np.float32)

    r0 = prepared(reference.thumb)
    rc = _shrunk(r0, ALIGN_COARSE_SIDE)
    # Starting places: (score, mirror, the reference is the template, template pixels -> image pixels).
    starts: list[tuple[float, bool, bool, npt.NDArray[np.float64]]] = []
    views: dict[bool, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}  # mirror -> blurred, coarse
    for mirror in (False, True) if mirrored else (False,):
        q_thumb = query.thumb[:, ::-1] if mirror else query.thumb
        q0 = prepared(q_thumb)
        qc = _shrunk(q0, ALIGN_COARSE_SIDE)
        views[mirror] = (q0, qc)
        if turned:
            starts.extend((score, mirror, True, start) for score, start in _turned_places(qc, rc))
            continue
        stretched = cv2.resize(qc, (rc.shape[1], rc.shape[0]), interpolation=cv2.INTER_AREA)
        starts.append((_correlation(rc, stretched), mirror, True,
                       np.diag([qc.shape[1] / rc.shape[1], qc.shape[0] / rc.shape[0], 1.0])))
        inside = _place(qc, rc, ALIGN_INSIDE)
        if inside is not None:
            starts.append((inside[0], mirror, True, inside[1]))
        crop = _place(rc, qc, ALIGN_CROP)
        if crop is not None:
            starts.append((crop[0], mirror, False, crop[1]))
    for _score, mirror, ref_is_template, start in sorted(starts, key=lambda s: -s[0])[
            :ALIGN_TURNED_TRIES if turned else ALIGN_TRIES]:
        found = _aligned(query, reference, r0, rc, *views[mirror], mirror, ref_is_template, start,
                         ALIGN_MEDIAN_MIN_EDGE_NCC if median else ALIGN_MIN_EDGE_NCC)
        if found is not None:
            return found
    return None


def _turned_places(qc: npt.NDArray[np.float32], rc: npt.NDArray[np.float32]
                   ) -> list[tuple[float, npt.NDArray[np.float64]]]:
    """For each angle of ``ALIGN_TURNS``: the best correlation of the reference ``rc`` turned by it
    (the frame grown to keep every pixel, the corners its mean grey) inside ``qc``
    (``ALIGN_TURNED_INSIDE``), and the map from ``rc``'s pixels to ``qc``'s there."""
    import cv2

    h, w = rc.shape
    places = []
    searched = _Searched(qc)
    for angle in ALIGN_TURNS:
        c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        size = (max(1, round(w * c + h * s)), max(1, round(w * s + h * c)))
        turn = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), np.float64)
        turn[:, 2] += np.array([size[0] / 2 - w / 2, size[1] / 2 - h / 2])
        turned = cv2.warpAffine(rc, turn, size, flags=cv2.INTER_LINEAR, borderValue=float(rc.mean()))
        found = _place(qc, turned, ALIGN_TURNED_INSIDE, searched)
        if found is not None:
            places.append((found[0], found[1] @ np.vstack([turn, [0.0, 0.0, 1.0]])))
    return places


def _aligned(query: Features, reference: Features, r0: npt.NDArray[np.float32], rc: npt.NDArray[np.float32],
             q0: npt.NDArray[np.float32], qc: npt.NDArray[np.float32], mirror: bool, ref_is_template: bool,
             start: npt.NDArray[np.float64], min_edge: float) -> Verification | None:
    """:func:`aligned_verification` from one starting place (``r0``/``q0`` the blurred thumbnails,
    the query's mirrored when ``mirror``; ``rc``/``qc`` the same at the coarse size; ``min_edge``
    the edge maps' correlation it needs)."""
    import cv2

    template, image = (rc, qc) if ref_is_template else (qc, rc)
    affine = _ecc(template, image, start, False, ALIGN_AFFINE_ITERATIONS)
    if affine is None or affine[0] < ALIGN_MIN_COARSE:
        return None
    h = affine[1]
    projective = _ecc(template, image, h, True, ALIGN_PROJECTIVE_ITERATIONS)
    if projective is not None and projective[0] >= affine[0]:
        h = projective[1]
    # Judged at the finer size: the coarse map carried over.
    qf, rf = _shrunk(q0, ALIGN_FINE_SIDE), _shrunk(r0, ALIGN_FINE_SIDE)
    fine_t, fine_i = (rf, qf) if ref_is_template else (qf, rf)
    if min(fine_t.shape) < CROP_MIN_SIDE or float(fine_t.std()) < CROP_MIN_STD:
        return None
    to_coarse = np.diag([template.shape[1] / fine_t.shape[1], template.shape[0] / fine_t.shape[0], 1.0])
    to_fine = np.diag([fine_i.shape[1] / image.shape[1], fine_i.shape[0] / image.shape[0], 1.0])
    h_fine = to_fine @ h @ to_coarse
    warped = cv2.warpPerspective(fine_i, h_fine, (fine_t.shape[1], fine_t.shape[0]),
                                 flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP, borderValue=-1.0)
    valid = warped >= 0
    if float(valid.mean()) < _ALIGN_MIN_VALID:
        return None
    score = _correlation(fine_t[valid], warped[valid])
    if score < ALIGN_MIN_NCC:
        return None
    if _edge_correlation(fine_t, np.where(valid, warped, fine_t).astype(np.float32)) < min_edge:
        return None
    # Reference pixels -> query pixels: through the fine thumbnails, undoing the mirror.
    to_q = np.diag([query.width / qf.shape[1], query.height / qf.shape[0], 1.0])
    from_r = np.diag([rf.shape[1] / reference.width, rf.shape[0] / reference.height, 1.0])
    h_ref = h_fine if ref_is_template else np.linalg.inv(h_fine)
    transform = to_q @ h_ref @ from_r
    if mirror:
        transform = np.array([[-1.0, 0.0, float(query.width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ transform
    transform /= transform[2, 2]
    _, qpoly, rpoly = _region(transform, (reference.width, reference.height), (query.width, query.height))
    if len(qpoly) < 3 or len(rpoly) < 3:
        return None
    w = _apply(transform, rpoly)[1]
    edit = _edit(transform, (reference.width, reference.height), (query.width, query.height), qpoly, rpoly,
                 bool(w.max() / w.min() > _PERSPECTIVE_FLAG))
    return Verification(True, "aligned", 0, score, transform=transform.tolist(), model="aligned",
                        query_polygon=qpoly.tolist(), reference_polygon=rpoly.tolist(), edit=edit, spread=1.0,
                        appearance=score)


# The low-resolution look (pixel shuffling, docs/geometry.md, "The low-resolution look"): both
# pictures' grey thumbnails (THUMB_SIDE) median-filtered over this many thumbnail pixels (a
# traded block of 1-2 % of the long side is 2-4 of them), then blurred (Gaussian sigma, thumbnail
# pixels), and enlarged to this long side for detection. Measured: median 5 / 7 / 9 with sigma
# 0 / 0.5 / 1 / 1.5 on the chains suite's shuffled copies; 7 and 1.0 verified the most.
LOW_RES_MEDIAN = 7
LOW_RES_BLUR = 1.0
LOW_RES_SIDE = 320
# ... and the correlation the filtered thumbnails need, above _MIN_APPEARANCE: filtering removes
# the fine detail that tells one word mark from another (the per-attack benchmark's "appsmith_"
# matched "about.me" at 0.62, word marks sharing letters 0.60-0.75; docs/geometry.md).
LOW_RES_APPEARANCE = 0.8


def low_resolution_features(features: Features, *, max_features: int = DEFAULT_MAX_FEATURES,
                            with_mirror: bool = False) -> Features | None:
    """Features of ``features``' thumbnail filtered (``LOW_RES_MEDIAN``, ``LOW_RES_BLUR``), in the same frame; None
    without a thumbnail. Local pixel displacement (blocks of the picture traded, pixelation,
    heavy noise) destroys the full-size keypoints, not the blurred outline; with the thumbnail
    blurred the same way (the ``thumb`` of the result), the appearance check compares the blurred
    pictures too. Works for references from storage: the thumbnail travels with their features."""
    import cv2

    if features.thumb is None:
        return None
    # The median first: it puts most traded blocks back (most of a window's blocks are in place)
    # and removes isolated ones from flat backgrounds; the Gaussian smooths what is left.
    blurred: npt.NDArray[Any] = cv2.GaussianBlur(cv2.medianBlur(features.thumb, LOW_RES_MEDIAN), (0, 0), LOW_RES_BLUR)
    th, tw = blurred.shape
    k = LOW_RES_SIDE / max(th, tw)
    size = (max(1, round(tw * k)), max(1, round(th * k)))
    gray = np.ascontiguousarray(cv2.resize(blurred, size, interpolation=cv2.INTER_LINEAR))
    sx, sy = features.width / size[0], features.height / size[1]
    frame = (features.width, features.height)
    low = _build(gray, False, sx, sy, frame, features.kind, max_features)
    low.thumb = np.ascontiguousarray(blurred)
    if with_mirror:
        low.mirror = _build(gray, True, sx, sy, frame, features.kind, max_features)
        low.mirror.thumb = low.thumb
    return low


def mirror_features(
    image: Image.Image,
    *,
    kind: str = DEFAULT_KIND,
    max_side: int = DEFAULT_MAX_SIDE,
    max_features: int = DEFAULT_MAX_FEATURES,
    min_side: int = DEFAULT_MIN_SIDE,
    clahe: bool = DEFAULT_CLAHE,
    frame: tuple[int, int] | None = None,
) -> Features:
    """Only the mirrored features of ``image`` (what ``with_mirror`` adds)."""
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}")
    gray, sx, sy = _gray(image, max_side, min_side, clahe)
    (sx, sy), size = _in_frame(image, frame, sx, sy)
    mirrored = _build(gray, True, sx, sy, size, kind, max_features)
    mirrored.thumb = _thumb(gray)
    return mirrored


def _thumb(gray: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    import cv2

    h, w = gray.shape
    k = min(1.0, THUMB_SIDE / max(h, w))
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return np.ascontiguousarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))


def _build(gray: npt.NDArray[Any], flipped: bool, sx: float, sy: float, size: tuple[int, int],
           kind: str, max_features: int) -> Features:
    """Features of ``gray`` (or of its mirror image, keypoints mapped back
    into the unflipped frame) in original pixel coordinates."""
    if flipped:
        gray = np.ascontiguousarray(gray[:, ::-1])
    xy, sizes, angles, desc = _detect(gray, kind, max_features)
    if flipped:
        xy[:, 0] = gray.shape[1] - xy[:, 0]
        angles = np.mod(180.0 - angles, 360.0).astype(np.float32)
    xy[:, 0] *= sx
    xy[:, 1] *= sy
    scale = math.sqrt(sx * sy)
    return Features(kind=kind, width=size[0], height=size[1], keypoints=xy, descriptors=desc,
                    sizes=(sizes * scale).astype(np.float32), angles=angles, pixel_scale=scale)


# --------------------------------------------------------------------------
# Serialisation (numpy .npz, never pickle: these bytes come back from storage)


def _arrays(f: Features, prefix: str) -> dict[str, npt.NDArray[Any]]:
    desc = f.descriptors
    # OpenCV's SIFT descriptors are integers in [0, 255] stored as float32:
    # keeping them as bytes is lossless and four times smaller.
    if f.kind == "sift" and desc.size and desc.max() <= 255 and np.array_equal(desc, np.round(desc)):
        desc = desc.astype(np.uint8)
    out = {f"{prefix}keypoints": np.asarray(f.keypoints, np.float32), f"{prefix}descriptors": desc}
    if f.sizes is not None:
        out[f"{prefix}sizes"] = np.asarray(f.sizes, np.float32)
    if f.angles is not None:
        out[f"{prefix}angles"] = np.asarray(f.angles, np.float32)
    return out


def features_to_bytes(f: Features) -> bytes:
    meta = {"version": FORMAT_VERSION, "kind": f.kind, "width": f.width, "height": f.height,
            "pixel_scale": f.pixel_scale, "mirror": f.mirror is not None}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), **_arrays(f, "")}
    if f.thumb is not None:
        arrays["thumb"] = np.asarray(f.thumb, np.uint8)
    if f.mirror is not None:
        arrays.update(_arrays(f.mirror, "m_"))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub lets **kwds fill allow_pickle
    return buf.getvalue()


def _unpack(z: Any, prefix: str, meta: dict[str, Any]) -> Features:
    kind = meta["kind"]
    kp = np.asarray(z[f"{prefix}keypoints"], np.float32)
    desc = np.asarray(z[f"{prefix}descriptors"])
    n = kp.shape[0] if kp.ndim == 2 else -1
    width = {"orb": 32, "akaze": 61, "sift": 128}[kind]
    if kp.ndim != 2 or kp.shape[1] != 2 or desc.shape != (n, width) or desc.dtype != np.uint8 and kind != "sift":
        raise ValueError("feature arrays have inconsistent shapes")
    if kind == "sift":
        desc = desc.astype(np.float32)
    extra: dict[str, FloatArray] = {}
    for name in ("sizes", "angles"):
        key = f"{prefix}{name}"
        if key in z.files:
            arr = np.asarray(z[key], np.float32)
            if arr.shape != (n,):
                raise ValueError(f"feature {name} have the wrong shape")
            extra[name] = arr
    return Features(kind=kind, width=int(meta["width"]), height=int(meta["height"]),
                    keypoints=kp, descriptors=np.ascontiguousarray(desc),
                    pixel_scale=float(meta["pixel_scale"]),
                    sizes=extra.get("sizes"), angles=extra.get("angles"))


def features_from_bytes(data: bytes) -> Features:
    """Inverse of :func:`features_to_bytes`; ``ValueError`` for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("version") != FORMAT_VERSION or meta.get("kind") not in KINDS:
                raise ValueError(f"unsupported feature format {meta.get('version')!r}/{meta.get('kind')!r}")
            feats = _unpack(z, "", meta)
            if "thumb" in z.files:
                thumb = np.asarray(z["thumb"])
                if thumb.dtype != np.uint8 or thumb.ndim != 2 or max(thumb.shape) > THUMB_SIDE:
                    raise ValueError("feature thumbnail has the wrong shape")
                feats.thumb = thumb
            if meta.get("mirror"):
                feats.mirror = _unpack(z, "m_", meta)
                feats.mirror.thumb = feats.thumb
    except ValueError:
        raise
    except Exception as e:  # zip, npy and json parsers raise many types on garbage
        raise ValueError(f"not a feature file: {e}") from e
    return feats


# --------------------------------------------------------------------------
# Polygon helpers (small convex polygons, plain numpy)


def _area(poly: npt.NDArray[Any]) -> float:
    """Signed shoelace area; positive for TL, TR, BR, BL order in y-down coordinates."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _is_convex(poly: npt.NDArray[Any]) -> bool:
    """Strictly convex and simple (no self-intersection) for a quadrilateral."""
    edges = np.roll(poly, -1, axis=0) - poly
    nxt = np.roll(edges, -1, axis=0)
    cross = edges[:, 0] * nxt[:, 1] - edges[:, 1] * nxt[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def _clip_to_rect(poly: npt.NDArray[Any], width: float, height: float) -> npt.NDArray[Any]:
    """Sutherland-Hodgman clip of a convex polygon to [0, width] x [0, height]."""
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if not pts:
            break
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = cur[axis] <= bound if keep_below else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_below else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        pts = out
    return np.array(pts, np.float64).reshape(-1, 2)


def _apply(h: npt.NDArray[Any], pts: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Projected points and their homogeneous w."""
    hom = np.c_[pts, np.ones(len(pts))] @ h.T
    return hom[:, :2] / hom[:, 2:3], hom[:, 2]


def _jacobian(h: npt.NDArray[Any], x: float, y: float) -> npt.NDArray[Any]:
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    jac: npt.NDArray[Any] = np.array([[h[0, 0] - h[2, 0] * u, h[0, 1] - h[2, 1] * u],
                                      [h[1, 0] - h[2, 0] * v, h[1, 1] - h[2, 1] * v]]) / w
    return jac


def _consistent(h: npt.NDArray[Any], q: Features, r: Features, qi: npt.NDArray[Any], ri: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Which matches agree with ``h`` in keypoint orientation and size too.

    Detectors give each keypoint an orientation and a size that transform
    with the picture; ``h`` predicts both from the reference keypoint (its
    local linear part at that point). True correspondences agree to a few
    degrees; a chance fit through unrelated pictures does not constrain them,
    so this removes most of its "inliers" (measured: docs/geometry.md).
    """
    n = len(qi)
    if q.angles is None or r.angles is None or q.sizes is None or r.sizes is None:
        return np.ones(n, bool)
    x, y = r.keypoints[ri, 0].astype(np.float64), r.keypoints[ri, 1].astype(np.float64)
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    j00, j01 = (h[0, 0] - h[2, 0] * u) / w, (h[0, 1] - h[2, 1] * u) / w
    j10, j11 = (h[1, 0] - h[2, 0] * v) / w, (h[1, 1] - h[2, 1] * v) / w
    theta = np.radians(r.angles[ri].astype(np.float64))
    dx, dy = np.cos(theta), np.sin(theta)
    predicted = np.degrees(np.arctan2(j10 * dx + j11 * dy, j00 * dx + j01 * dy))
    turn = np.abs((q.angles[qi] - predicted + 180.0) % 360.0 - 180.0)
    local_scale = np.sqrt(np.abs(j00 * j11 - j01 * j10))
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.abs(np.log2(q.sizes[qi] / (r.sizes[ri] * local_scale)))
    agree: npt.NDArray[Any] = (turn <= _MAX_TURN_DEG) & (size <= _MAX_LOG2_SIZE)
    return agree


def _inside(poly: npt.NDArray[Any], pts: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Which points lie inside (or on) the convex polygon ``poly``."""
    a = poly
    b = np.roll(poly, -1, axis=0)
    cross = ((b[:, 0] - a[:, 0])[None, :] * (pts[:, 1:2] - a[:, 1][None, :])
             - (b[:, 1] - a[:, 1])[None, :] * (pts[:, 0:1] - a[:, 0][None, :]))
    inside: npt.NDArray[Any] = np.all(cross >= -1e-6, axis=1) | np.all(cross <= 1e-6, axis=1)
    return inside


def _appearance(h: npt.NDArray[Any], q: Features, r: Features) -> float | None:
    """Normalised cross-correlation of the two thumbnails once ``h`` aligns
    them, over the copied region; None when it cannot be judged (no
    thumbnails, a region of a few pixels, or flat pixels on either side).

    Comparison happens in the frame where the region is smaller, the sharper
    side blurred to match, so a copy at 20 % size still correlates.
    """
    import cv2

    if q.thumb is None or r.thumb is None:
        return None
    qt, rt = q.thumb, r.thumb
    sq = np.diag([qt.shape[1] / q.width, qt.shape[0] / q.height, 1.0])
    sr = np.diag([rt.shape[1] / r.width, rt.shape[0] / r.height, 1.0])
    ht = sq @ h @ np.linalg.inv(sr)  # reference thumbnail -> query thumbnail
    scale = math.sqrt(abs(np.linalg.det(_jacobian(ht, rt.shape[1] / 2, rt.shape[0] / 2))))
    if scale <= 1.0:
        src, dst, m = rt, qt, ht
    else:
        src, dst, m, scale = qt, rt, np.linalg.inv(ht), 1.0 / scale
    srcf: npt.NDArray[Any] = src.astype(np.float32)
    if scale < 0.9:  # anti-alias before shrinking
        srcf = cv2.GaussianBlur(srcf, (0, 0), 0.5 * math.sqrt(1.0 / scale**2 - 1.0))
    half = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])  # OpenCV: pixel centres at integers
    m_cv = np.linalg.inv(half) @ m @ half
    size = (dst.shape[1], dst.shape[0])
    warped = cv2.warpPerspective(srcf, m_cv, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones(src.shape, np.uint8), m_cv, size, flags=cv2.INTER_NEAREST)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    if mask.sum() < _MIN_APPEARANCE_PX:
        return None
    # Median over a grid of cells rather than one global figure: a sticker
    # or caption over part of the copy spoils a few cells, not the verdict.
    # Cells flat on both sides (a logo's plain background) carry no evidence.
    ys, xs = np.nonzero(mask)
    y_edges = np.linspace(ys.min(), ys.max() + 1, _APPEARANCE_GRID + 1).astype(int)
    x_edges = np.linspace(xs.min(), xs.max() + 1, _APPEARANCE_GRID + 1).astype(int)
    dstf = dst.astype(np.float64)
    scores = []
    for y0, y1 in zip(y_edges[:-1], y_edges[1:]):
        for x0, x1 in zip(x_edges[:-1], x_edges[1:]):
            cell = mask[y0:y1, x0:x1]
            if cell.sum() < 12:
                continue
            a = warped[y0:y1, x0:x1][cell].astype(np.float64)
            b = dstf[y0:y1, x0:x1][cell]
            flat_a, flat_b = a.std() < 3.0, b.std() < 3.0
            if flat_a or flat_b:
                if not (flat_a and flat_b):
                    scores.append(0.0)  # detail on one side only: they differ here
                continue
            a -= a.mean()
            b -= b.mean()
            scores.append(float(a @ b) / math.sqrt(float(a @ a) * float(b @ b)))
    if len(scores) < 3:
        return None
    return float(np.median(scores))


def _hull_area(pts: npt.NDArray[Any]) -> float:
    import cv2

    if len(pts) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(pts.astype(np.float32))))


# --------------------------------------------------------------------------
# Matching and model fitting


def _knn2(q: npt.NDArray[Any], r: npt.NDArray[Any], binary: bool) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The two nearest reference descriptors of each query descriptor:
    distances (Hamming, or squared L2) and indices, both (n, 2)."""
    import faiss

    # FAISS's SIMD scans are 4x (Hamming) to 7x (L2) faster than OpenCV's
    # brute-force matcher at 1000 x 1000. Its OpenMP threads are not: on a busy
    # machine their spin-waits made one such search take 200-300 ms, so it
    # runs single-threaded (the worker runs one task per core anyway).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        if binary:
            index = faiss.IndexBinaryFlat(r.shape[1] * 8)
            index.add(r)
            dist, idx = index.search(q, 2)
        else:
            dist, idx = faiss.knn(q, r, 2)
    finally:
        faiss.omp_set_num_threads(threads)
    return dist.astype(np.float32), idx


def _match(q: Features, r: Features, ratio: float) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Indices (query, reference) of matches passing Lowe's ratio test."""
    binary = q.kind != "sift"
    qd = np.ascontiguousarray(q.descriptors, np.uint8 if binary else np.float32)
    rd = np.ascontiguousarray(r.descriptors, np.uint8 if binary else np.float32)
    dist, idx = _knn2(qd, rd, binary)
    limit = ratio if binary else ratio * ratio  # faiss L2 distances are squared
    ok = (idx[:, 1] >= 0) & (dist[:, 0] < limit * dist[:, 1])
    return np.flatnonzero(ok), idx[ok, 0].astype(np.intp)


@dataclass
class _Fit:
    h: npt.NDArray[Any]
    model: str
    mask: npt.NDArray[Any]  # bool, per match


def _fit_homography(src: npt.NDArray[Any], dst: npt.NDArray[Any], thr: float, method: str) -> _Fit | None:
    import cv2

    flag = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}[method]
    h, mask = cv2.findHomography(src, dst, flag, thr, maxIters=_RANSAC_ITERS, confidence=_CONFIDENCE)
    if h is None or mask is None or not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    return _Fit(h / h[2, 2], "homography", mask.ravel().astype(bool))


def _fit_similarity(src: npt.NDArray[Any], dst: npt.NDArray[Any], thr: float, method: str) -> _Fit | None:
    import cv2

    a, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thr,
                                          maxIters=_RANSAC_ITERS, confidence=_CONFIDENCE)
    if a is None or mask is None or not np.all(np.isfinite(a)):
        return None
    return _Fit(np.vstack([a, [0.0, 0.0, 1.0]]), "similarity", mask.ravel().astype(bool))


def _region(h: npt.NDArray[Any], ref_size: tuple[int, int], query_size: tuple[int, int]
            ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """The reference outline mapped by ``h`` (unclipped), the part inside the
    query frame, and that part mapped back into the reference."""
    (rw, rh), (qw, qh) = ref_size, query_size
    quad, _ = _apply(h, np.array([[0, 0], [rw, 0], [rw, rh], [0, rh]], np.float64))
    qpoly = _clip_to_rect(quad, qw, qh)
    rpoly = _apply(np.linalg.inv(h), qpoly)[0] if len(qpoly) else qpoly
    return quad, qpoly, rpoly


def _edit(h: npt.NDArray[Any], ref_size: tuple[int, int], query_size: tuple[int, int],
          qpoly: npt.NDArray[Any], rpoly: npt.NDArray[Any], perspective: bool) -> EditReport:
    # Scale, rotation and stretch are read off the local linear part of h at
    # the centre of the visible region: for a homography they vary across the
    # picture and that is where the copy is.
    cx, cy = rpoly.mean(axis=0)
    jac = _jacobian(h, float(cx), float(cy))
    det = float(np.linalg.det(jac))
    # A mirrored copy is R * s * F with F = diag(-1, 1); undo F to read R * s.
    m = jac @ np.diag([-1.0, 1.0]) if det < 0 else jac
    sx, sy = float(np.linalg.norm(m[:, 0])), float(np.linalg.norm(m[:, 1]))
    # Rotation of the closest pure rotation (robust to a little shear); the
    # minus turns y-down maths into counter-clockwise-as-seen.
    rot = -math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))
    return EditReport(
        scale=math.sqrt(abs(det)), rotation_deg=180.0 if rot <= -180.0 else rot, mirrored=det < 0,
        visible_fraction=min(abs(_area(rpoly)) / float(ref_size[0] * ref_size[1]), 1.0),
        query_coverage=min(abs(_area(qpoly)) / float(query_size[0] * query_size[1]), 1.0),
        aspect_change=sx / sy, perspective=perspective,
    )


def edit_from_transform(transform: Any, reference_size: tuple[int, int],
                        query_size: tuple[int, int]) -> tuple[EditReport, list[list[float]]]:
    """The edit report and the query polygon that a known reference -> query
    transform implies (benchmarks compare ``verify`` against this)."""
    h = np.asarray(transform, np.float64)
    _, qpoly, rpoly = _region(h, reference_size, query_size)
    w = _apply(h, rpoly)[1]
    persp = bool(w.max() / w.min() > _PERSPECTIVE_FLAG)
    return _edit(h, reference_size, query_size, qpoly, rpoly, persp), qpoly.tolist()


def _judge(fit: _Fit, q: Features, r: Features, qi: npt.NDArray[Any], ri: npt.NDArray[Any],
           mirrored: bool, min_inliers: int, min_appearance: float = _MIN_APPEARANCE) -> Verification:
    """Accept ``fit`` or say why not; on acceptance fill in the geometry.
    Inliers count only matches that also agree in orientation and size."""
    src, dst = r.keypoints[ri].astype(np.float64), q.keypoints[qi].astype(np.float64)
    fit.mask &= _consistent(fit.h, q, r, qi, ri)
    n_in = int(fit.mask.sum())
    ratio = n_in / max(len(fit.mask), 1)

    def no(reason: str) -> Verification:
        return Verification(False, reason, n_in, ratio, model=fit.model)

    if n_in < min_inliers:
        return no(f"too few inliers ({n_in} < {min_inliers})")
    h = fit.h
    min_area = (_MIN_REGION_PX * q.pixel_scale) ** 2
    with np.errstate(all="ignore"):
        quad, w = _apply(h, np.array([[0, 0], [r.width, 0], [r.width, r.height], [0, r.height]], np.float64))
    if not np.all(np.isfinite(quad)) or abs(np.linalg.det(h)) < 1e-12:
        return no("degenerate transform")
    area_q = _area(quad)
    if abs(area_q) < min_area:
        return no("collapsed region: the mapped reference has almost no area")
    scale = math.sqrt(abs(area_q) / float(r.width * r.height))
    if not _MIN_SCALE <= scale <= _MAX_SCALE:
        return no(f"absurd scale ({scale:.3g})")
    if np.any(w <= 0) or not _is_convex(quad):
        return no("self-intersecting or non-convex region")
    if (area_q < 0) != mirrored:
        # An orientation the descriptors cannot have produced: plain ones
        # fitted a flip, or mirrored ones fitted a second flip back.
        return no("inconsistent mirroring")
    _, qpoly, rpoly = _region(h, (r.width, r.height), (q.width, q.height))
    if len(qpoly) < 3 or abs(_area(qpoly)) < min_area:
        return no("the region lies outside the suspect image")
    w_vis = _apply(h, rpoly)[1]
    persp = float(w_vis.max() / w_vis.min())
    if persp > _MAX_PERSPECTIVE:
        return no(f"extreme perspective ({persp:.2f})")
    # Relative to where the reference has keypoints at all, not to its area:
    # a logo's keypoints sit on a glyph that may fill a tenth of its tile.
    visible = r.keypoints[_inside(rpoly, r.keypoints)]
    spread = _hull_area(src[fit.mask]) / max(_hull_area(visible), 1e-9)
    if spread < _MIN_SPREAD:
        return no(f"inliers concentrated in a tiny area ({spread:.1%} of the detailed region)")
    appearance = _appearance(h, q, r)
    if appearance is not None and appearance < min_appearance and n_in < APPEARANCE_WAIVED:
        return no(f"the aligned pictures do not look alike (correlation {appearance:.2f})")
    edit = _edit(h, (r.width, r.height), (q.width, q.height), qpoly, rpoly,
                 fit.model == "homography" and persp > _PERSPECTIVE_FLAG)
    if not 1 / _MAX_ASPECT <= edit.aspect_change <= _MAX_ASPECT:
        return no(f"extreme distortion (x/y stretch {edit.aspect_change:.2f})")
    idx = np.flatnonzero(fit.mask)
    if len(idx) > _SAMPLE:
        idx = idx[np.linspace(0, len(idx) - 1, _SAMPLE).round().astype(int)]
    sample = [(float(dst[i, 0]), float(dst[i, 1]), float(src[i, 0]), float(src[i, 1])) for i in idx]
    return Verification(
        True, "accepted", n_in, ratio, transform=h.tolist(), model=fit.model,
        query_polygon=qpoly.tolist(), reference_polygon=rpoly.tolist(), edit=edit,
        matches_sample=sample, spread=spread, appearance=appearance,
    )


def _attempt(q: Features, r: Features, mirrored: bool, min_inliers: int, ratio: float,
             method: str, min_appearance: float = _MIN_APPEARANCE) -> Verification:
    qi, ri = _match(q, r, ratio)
    if len(qi) < min_inliers:
        return Verification(False, f"too few matches ({len(qi)} < {min_inliers})", len(qi),
                            1.0 if len(qi) else 0.0)
    src = r.keypoints[ri].astype(np.float64)
    dst = q.keypoints[qi].astype(np.float64)
    thr = _RANSAC_PX * max(q.pixel_scale, 1.0)
    # Fit mirrored pairs as (flipped reference -> query), then compose the
    # flip back in: USAC rejects orientation-reversing homographies and a
    # similarity transform cannot express a flip at all.
    flip = np.array([[-1.0, 0.0, r.width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fit_src = src.copy()
    if mirrored:
        fit_src[:, 0] = r.width - fit_src[:, 0]
    best: Verification | None = None
    for fitter in (_fit_homography, _fit_similarity):
        fit = fitter(fit_src, dst, thr, method)
        if fit is None:
            continue
        if mirrored:
            fit.h = fit.h @ flip
        result = _judge(fit, q, r, qi, ri, mirrored, min_inliers, min_appearance)
        if result.accepted:
            return result
        if best is None or result.inliers > best.inliers:
            best = result
    return best or Verification(False, "no transform fits the matches", 0, 0.0)


def verify(query: Features, reference: Features, *, min_inliers: int | None = None,
           ratio: float | None = None, method: str = DEFAULT_METHOD,
           min_appearance: float | None = None, plain: Verification | None = None) -> Verification:
    """Is ``query`` (or part of it) a geometrically consistent copy of ``reference``?

    Tries the plain features and the mirrored ones (``query.mirror``, else
    ``reference.mirror``, when present). Never raises for poor input: too
    few keypoints give ``reason`` "not enough detail ...". ``min_inliers``
    defaults per kind (``MIN_INLIERS``); ``ratio`` (Lowe's test, default per
    kind) and ``method`` ("magsac" or "ransac" for the homography) are there
    for benchmarks; ``min_appearance`` (default ``_MIN_APPEARANCE``) is the correlation the aligned
    thumbnails need (a second look passes ``SECOND_LOOK_APPEARANCE``). ``plain``: what this call
    without mirrored features gave (the same query features, reference and settings), when the
    caller has it: only the mirrored orientation is tried then (the attempts are deterministic, so
    the result is the one a full call gives).
    """
    appearance = _MIN_APPEARANCE if min_appearance is None else min_appearance
    if query.kind != reference.kind:
        raise ValueError(f"cannot match {query.kind} features against {reference.kind} features")
    if method not in ("magsac", "ransac"):
        raise ValueError(f"unknown homography method {method!r}")
    ratio = _RATIO[query.kind] if ratio is None else ratio
    min_inliers = MIN_INLIERS[query.kind] if min_inliers is None else max(min_inliers, 4)
    for name, f in (("suspect", query), ("reference", reference)):
        if len(f) < MIN_KEYPOINTS:
            return Verification(False, f"not enough detail: the {name} image has {len(f)} keypoints "
                                       f"(at least {MIN_KEYPOINTS} needed)")
    if plain is None:
        plain = _attempt(query, reference, False, min_inliers, ratio, method, appearance)
    if query.mirror is not None:
        flipped = _attempt(query.mirror, reference, True, min_inliers, ratio, method, appearance)
    elif reference.mirror is not None:
        flipped = _attempt(query, reference.mirror, True, min_inliers, ratio, method, appearance)
    else:
        return plain
    # Both can be accepted: a nearly symmetric picture (many logos) partly
    # matches its own mirror image. The orientation with more inliers is the
    # one the copy really has.
    if plain.accepted != flipped.accepted:
        return plain if plain.accepted else flipped
    return flipped if flipped.inliers > plain.inliers else plain
