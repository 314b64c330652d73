"""Marks: the logo alone, keyed out of a protected picture, and found again in a scene (issue 14).

A protected picture that is a mark on a flat background (a logo tile), or that
carries transparency (an RGBA PNG), holds a *mark*: the pixels that are not
background, with their alpha. In the wild the mark is printed or composited
without its tile, at 8-25 % of a photo's width, so the tile's own signals miss
it. This module

* extracts the mark (:func:`extract_mark`): the alpha channel when the picture
  has one, else the background keyed out when the picture's border is one flat
  colour (distance in CIELAB from the border's median colour; a photo, whose
  border is not flat, has no mark);
* renders it for the CNN (:func:`mark_views`): tightly cropped on a neutral
  grey and on three textured backgrounds, so that a query tile holding the
  mark on a scene has a close vector; those vectors go into the same vector
  index as the pictures', under ids that say which picture they belong to
  (:func:`mark_vector_id`, :func:`vector_reference`);
* verifies a candidate (:func:`verify_mark`): the mark's grey template and its
  edge map matched (normalised cross-correlation, the template masked by the
  mark's alpha) over a few scales and rotations in the part of the query where
  the CNN found it, then its colours compared; marks have few keypoints and
  flat colours, which is where ORB fails and a template succeeds;
* speaks of it (:class:`MarkEdit`, :func:`as_mark`): "the mark, at 18 % of the picture's
  width, lower left, tilted 8°", also when the local features confirmed the copy.

Plain numpy, Pillow and OpenCV (docs/matching.md, "Marks").
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from matching.core.geometry import EditReport, Verification

__all__ = ["MARK_ID_BASE", "MARK_SLOTS", "Mark", "MarkEdit", "MarkMatch", "extract_mark", "mark_from_png",
           "mark_info", "mark_to_png", "mark_vector_id", "mark_views", "vector_reference", "verify_mark"]

# Vector-index ids of a mark's views: a picture's own vector has its id; view ``slot`` of its mark
# has MARK_ID_BASE + id * MARK_SLOTS + slot (ids stay unique, and any id maps back to its picture).
MARK_ID_BASE = 1 << 44
MARK_SLOTS = 8

# Extraction. A border is flat when this share of its pixels lies within FLAT_DELTA_E of its median
# colour; a pixel is background below KEY_DELTA_E (soft up to the mark's own distance).
FLAT_SHARE = 0.9
FLAT_DELTA_E = 10.0
KEY_DELTA_E = 8.0
MIN_INK_DELTA_E = 20.0  # the mark must stand this far from the background somewhere
MIN_COVERAGE, MAX_COVERAGE = 0.004, 0.85  # share of the picture the mark covers
ALPHA_MIN_TRANSPARENT = 0.05  # an alpha channel is a mask when this share of pixels is see-through
MARK_SIDE = 256  # long side of the stored mark

# Verification (calibrated on the marks benchmark's distractors: docs/benchmarks.md).
SEARCH_SIDE = 320  # the query is searched at this long side at most
# Edge maps are taken over the three colour planes (the root mean square of their gradients), not
# over grey levels alone: a mark whose colour is about as bright as the scene behind it (a red gate on
# dark rubble, a yellow mark on teal fabric) has no outline in grey; a grey picture's map is the same
# either way. False: grey levels, as before 2026-12-06 (docs/benchmarks.md section 7, "Colour edges").
COLOUR_EDGES = True
SCALES = 12        # template widths tried, geometric, between MIN_SHARE and MAX_SHARE of the query's width
MIN_SHARE, MAX_SHARE = 0.07, 0.42
# A mark is not looked for at a width where its long side would be under MIN_MARK_SIDE pixels of the
# query as given: a template of 15-28 px correlates with a dot, a box or a letter of any logo (the
# chained-edits suite's benchmark seed matched one reference's two-dot mark in six unrelated logos of
# 200-360 px, at 14-28 px); the smallest marks, 8 % of a picture 400 px wide, are 32 px.
MIN_MARK_SIDE = 30
TILE_SHARES = (0.25, 0.9)  # of the width of the tile the CNN found the mark through
PEAKS = 4  # best places whose colours are compared, at most
# The quick look (``_quick_score``): before the search, the searched region at QUICK_SIDE px on its
# long side, QUICK_SCALES upright widths (MIN_SHARE-MAX_SHARE of its width), the edge and colour
# likeness terms only. A mark whose best quick score is under QUICK_FLOOR is not searched for: on
# the development seed's suites no search that found the true mark, sure or unsure, scored under
# 0.17, and about half of all searches (look-alikes, scenes without the mark) do
# (docs/benchmarks.md section 7, "The quick look"). None turns it off.
QUICK_SIDE = 160
QUICK_SCALES = 6
QUICK_FLOOR: float | None = 0.15
ANGLES = (-8.0, 0.0, 8.0)  # upright first, then the turns at the best scales
# The turns are tried only when the upright sweep's best place scores TURN_FLOOR or more: on the
# development seed (1) of the marks and chained-edits suites, every place found turned (sure or
# unsure) was at 0.29 or more upright, and no search whose upright best was under 0.22 (43-53 % of
# all searches) found anything turned; a turn gained at most 0.31 over upright
# (docs/benchmarks.md section 7, "Turns only where the upright sweep came near").
TURN_FLOOR = 0.22
MIN_TEMPLATE_PX = 12
GREY_FLOOR = 12.0  # grey levels: a window flatter than this does not correlate (_ncc)
EDGE_FLOOR = 10.0  # the same for the edge map
EDGE_SIGMA = 1.0  # px: edge maps are blurred so that a thin stroke still meets between two template scales
SIZE_PENALTY = 3.0  # subtracted from a template's correlation over the square root of its pixels
PALETTE = 3  # main colours of a mark (k-means on chromaticity and brightness)
LIKENESS_SPREAD = 0.12  # chromaticity distance at which a pixel stops looking like the mark's colours
LIKENESS_FLOOR = 20.0
# Candidates a check looks for the mark of, at most, in the order the cascade meets them (each
# search costs ~50-200 ms), and the score a search accepts at: MIN_SCORE for the first
# SURE_SEARCHES, LATE_MIN_SCORE for the later ones (docs/benchmarks.md section 7, "A third mark
# search"). On the development seeds a third search at MIN_SCORE found 9 more of 120 marks in
# scenes, but on the benchmark seed it also let in 2 of 1,000 chained distractors and 3 wrong
# matches elsewhere, at 0.57-0.72; 11 of the development seeds' 12 wrong mark matches beyond the
# second search scored under 0.65, and 6 of its 9 right ones over it.
VERIFY_TOP = 3
SURE_SEARCHES = 2
# Of those, the answer's passes leave this many to the partial-copy pass when one follows: with
# the answer spending all three on the whole picture's look-alikes (cosines 0.37-0.49), the marks
# a tile found at 0.58-0.78 went unsearched (docs/benchmarks.md section 7, "The head retrained
# with more views"). A late search's mark is also confirmed by the CNN (Matcher._verify_mark).
PARTIAL_RESERVE = 1
LATE_MIN_SCORE = 0.65
MARK_CANDIDATE = 0.2  # CNN cosine of a tile to a mark's view at or above: the mark is looked for
MAX_SHARE_AS_MARK = 0.6  # as_mark: a mark wider than this share of the query is a copy of the picture
TILE_OUTSIDE = 0.08  # _tile_pasted: the tile's outside looked at this share of its size beyond its outline
TILE_DELTA = 30.0  # RGB distance: a query pixel this close to the tile's background colour shows it
MIN_SCORE = 0.57   # combined correlation (edges, colour likeness, grey), less SIZE_PENALTY: the mark is there
# A place scoring at least REFINE_FLOOR is aligned to the mark before it is judged (_refine): the
# template search tries upright and +-8° turns at 12 widths, and a mark printed in perspective, turned
# by another angle or between two widths correlates at 0.35-0.55 where it lies (the marks suite's
# misses, docs/matching.md "Marks"). ECC (OpenCV's findTransformECC, an affine warp) on the edge
# maps from the peak; the warp may scale by REFINE_SCALE and shear by REFINE_SHEAR at most.
REFINE_FLOOR = 0.3
REFINE_SCALE = (0.8, 1.25)
REFINE_SHEAR = 0.25
REFINE_ITERATIONS = 60
# ... and an aligned place must score REFINED_MARGIN above min_score: six free parameters fitted to
# the query raise chance correlations too (look-alike marks scored 0.58-0.59 aligned in the
# per-attack and marks suites; one at 0.618 in the chains suite still passes). At 0.05 the marks
# suite finds as many copies on the whole query (76 of 120) but a logo turned by 16° in the tests
# (0.60) is lost.
REFINED_MARGIN = 0.03
MAX_COLOUR_DE = 16.0  # mean chromaticity distance of the mark's pixels (_colour_distance)
# A place that scores as a sure find but whose colours lie MAX_COLOUR_DE-UNSURE_COLOUR_DE from the
# mark's is an unsure find (the CNN settles it): thin strokes whose colours blur into a textured
# surface at search size, a turned mark under a coloured shade (docs/benchmarks.md section 7,
# "Nearly the mark's colours").
UNSURE_COLOUR_DE = 25.0
DARK_MARK_LIFT = 50.0  # grey levels a dark mark's median may gain where it is found (_colour_distance)
# A place that scores WEAK_SCORE-MIN_SCORE (aligned or not) and has the mark's colours is an
# *unsure* find: shading, texture and blur spoil the correlations of many true marks there (on the
# development seed of the marks suite, 13 of the 66 places found for the true logo scored 0.44-0.57),
# and look-alike marks reach it too. The CNN settles it: the place, framed as the mark views are
# (mark_crop), must have the searched reference as its nearest protected picture in the vector index,
# at a cosine of CROP_COSINE or more, and be WEAK_MIN_SIDE pixels or more on its long side (the
# chained-edits suite's look-alikes that passed the CNN were 29-57 px: a small place upscaled to the
# CNN's input is a blur that many marks resemble). docs/benchmarks.md section 7, "Unsure marks".
WEAK_SCORE = 0.44
CROP_COSINE = 0.45
# A place that scored under MIN_SCORE (WEAK_SCORE and up) needs a crop cosine of WEAK_CROP_COSINE:
# on the chains suite's benchmark seed two look-alike logos were confirmed so at 0.50-0.53, while the
# true marks found under the bar were confirmed at 0.55-0.93 on every suite and seed measured
# (docs/benchmarks.md section 7, "Unsure marks need a surer CNN"). A sure place without detail
# (indistinct) keeps CROP_COSINE: true marks were confirmed so at 0.52.
WEAK_CROP_COSINE = 0.53
WEAK_MIN_SIDE = 64
CROP_MARGIN = 1.25  # the crop is the place's box grown by this much, then widened to 4:3
VIEW_SEED = 1409
# The mark's inner detail (_detail): its convex hull shrunk by this share of its size; a term
# whose template spreads less than DETAIL_FLAT (0-255) there has no detail to correlate.
DETAIL_INSET = 0.06
DETAIL_FLAT = 12.0
DETAIL_HOLES = 0.04  # share of the shrunk hull that is holes, under which the shape has none
# A sure mark with less detail than DETAIL_MIN (or none) is confirmed by the CNN (indistinct); a
# late search's mark with DETAIL_SURE or more needs no CNN (detailed). Real look-alike coins
# correlated their detail at 0.33-0.54 and true composites at 0.71-0.84; on the development seeds
# the look-alikes accepted reached 0.40-0.67 and the true marks found sure 0.44-0.96
# (docs/matching.md, "A mark's detail, or the CNN").
DETAIL_MIN = 0.55
DETAIL_SURE = 0.8
# An unsure place that scored under the search's bar (WEAK_SCORE-MIN_SCORE) must show this much of
# the mark's inner detail before the CNN is asked (``vague``): on the marks suite's benchmark seed
# three look-alike logos in unrelated pictures were confirmed by the CNN at details of 0.12-0.26,
# while the true marks found so showed 0.29-0.75 over every suite and seed measured but for one
# mirrored copy (0.08: the search does not mirror the mark) (docs/benchmarks.md section 7,
# "Vague unsure marks").
WEAK_DETAIL_MIN = 0.27
MARK_VIEWS = 4  # len(mark_views(...)): vectors a mark adds to the vector index


@dataclass(frozen=True)
class Mark:
    """The mark alone: ``image`` RGBA, tightly cropped, long side <= MARK_SIDE; ``box`` where it
    lies in the picture's own pixels (x0, y0, x1, y1); ``source`` ``"alpha"`` or ``"background"``
    (keyed out of a flat border)."""

    image: Image.Image
    box: tuple[int, int, int, int]
    source: str
    # The flat background it was keyed from (RGB), None for a transparent picture: a copy that
    # shows it around the mark is a copy of the whole tile (as_mark).
    background: tuple[int, int, int] | None = None
    # What every search for the mark derives from it alone (its main colours: _palette).
    derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def mask(self) -> Image.Image:
        return self.image.getchannel("A")


def mark_vector_id(ref_id: int, slot: int) -> int:
    if not 0 <= slot < MARK_SLOTS:
        raise ValueError(f"slot must be in [0, {MARK_SLOTS})")
    return MARK_ID_BASE + ref_id * MARK_SLOTS + slot


def with_mark_views(ids: npt.NDArray[Any], vectors: npt.NDArray[Any],
                    marked: Iterable[tuple[int, npt.NDArray[Any]]]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """``ids``/``vectors`` followed by the views of marks (``marked``: (picture id, its views'
    embeddings, one row each)), under the ids ``mark_vector_id`` gives them: the vector index of
    a protected set whose logos have marks."""
    extra_ids: list[int] = []
    extra: list[npt.NDArray[Any]] = []
    for ref_id, views in marked:
        extra_ids += [mark_vector_id(ref_id, slot) for slot in range(len(views))]
        extra.append(views)
    if not extra:
        return ids, vectors
    return np.concatenate([ids, np.array(extra_ids, np.int64)]), np.concatenate([vectors, *extra])


def vector_reference(vector_id: int) -> int:
    """The protected picture a vector-index id belongs to (its own vector, or a view of its mark)."""
    return vector_id if vector_id < MARK_ID_BASE else (vector_id - MARK_ID_BASE) // MARK_SLOTS


def _lab(rgb: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    import cv2

    return np.asarray(cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB), dtype=np.float32)


def _border(a: npt.NDArray[Any], width: int = 2) -> npt.NDArray[Any]:
    return np.concatenate([a[:width].reshape(-1, a.shape[-1]), a[-width:].reshape(-1, a.shape[-1]),
                           a[:, :width].reshape(-1, a.shape[-1]), a[:, -width:].reshape(-1, a.shape[-1])])


def _alpha_mask(alpha: Image.Image | None, size: tuple[int, int]) -> npt.NDArray[np.float32] | None:
    if alpha is None:
        return None
    a = np.asarray(alpha.convert("L").resize(size) if alpha.size != size else alpha.convert("L"),
                   dtype=np.float32) / 255.0
    return a if float((a < 0.5).mean()) >= ALPHA_MIN_TRANSPARENT else None


def _keyed_mask(rgb: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None:
    """(alpha, background Lab colour) when the border is one flat colour, else None."""
    # The border alone first (Lab is per pixel, so the same values): a photo is turned away
    # without converting its whole picture.
    border = _lab(_border(rgb)[None])[0]
    bg = np.median(border, axis=0)
    if float((np.linalg.norm(border - bg, axis=1) < FLAT_DELTA_E).mean()) < FLAT_SHARE:
        return None  # a photo, or a tile whose border is not one colour
    distance = np.linalg.norm(_lab(rgb) - bg, axis=2)
    far = float(distance.max())
    if far < MIN_INK_DELTA_E:
        return None
    ink = float(np.median(distance[distance >= 0.6 * far]))
    alpha = np.clip((distance - KEY_DELTA_E) / max(1.0, min(ink, 40.0) - KEY_DELTA_E), 0.0, 1.0)
    return alpha.astype(np.float32), bg.astype(np.float32)


def extract_mark(image: Image.Image, alpha: Image.Image | None = None, *,
                 frame: tuple[int, int] | None = None) -> Mark | None:
    """The mark of a protected picture, or None when it has none (a photo, a picture filled edge to
    edge). ``image`` is the RGB working picture, ``alpha`` its transparency (mode L) when it had
    one, ``frame`` the picture's own size (``box`` is given in it; default ``image.size``)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    a = _alpha_mask(alpha, image.size)
    source = "alpha"
    unblend: npt.NDArray[np.float32] | None = None
    if a is None:
        keyed = _keyed_mask(rgb)
        if keyed is None:
            return None
        a, _bg = keyed
        source = "background"
        unblend = np.median(_border(rgb), axis=0).astype(np.float32)
    coverage = float(a.mean())
    if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        return None
    ys, xs = np.nonzero(a > 0.25)
    if len(xs) == 0:
        return None
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if min(x1 - x0, y1 - y0) < 4:
        return None
    crop_a = a[y0:y1, x0:x1, None]
    colour = rgb[y0:y1, x0:x1]
    if unblend is not None:  # the keyed edge's colour without the background mixed in
        colour = (colour - (1.0 - crop_a) * unblend) / np.maximum(crop_a, 1e-3)
    rgba = np.concatenate([np.clip(colour, 0, 255), 255.0 * crop_a], axis=2)
    mark = Image.fromarray((rgba + 0.5).astype(np.uint8), "RGBA")
    if max(mark.size) > MARK_SIDE:
        k = MARK_SIDE / max(mark.size)
        mark = mark.convert("RGBa").resize((max(1, round(mark.width * k)), max(1, round(mark.height * k))),
                                           Image.Resampling.LANCZOS).convert("RGBA")
    fw, fh = frame or image.size
    sx, sy = fw / image.width, fh / image.height
    box = (int(x0 * sx), int(y0 * sy), min(fw, math.ceil(x1 * sx)), min(fh, math.ceil(y1 * sy)))
    background = None if unblend is None else (int(unblend[0]), int(unblend[1]), int(unblend[2]))
    return Mark(mark, box, source, background)


def mark_to_png(mark: Mark) -> bytes:
    """The mark as stored: an RGBA PNG at zlib's default level. ``optimize=True`` tried every
    filter at level 9 for about 5 % fewer bytes at 5-30x the time (6.4 against 1.2 ms on plain
    logos, tens of ms on keyed photos), which indexing paid once per picture
    (docs/benchmarks.md section 11)."""
    buf = io.BytesIO()
    mark.image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def mark_info(mark: Mark) -> dict[str, Any]:
    """What the database keeps beside the mark's PNG (``ProtectedImage.mark_info``): where it lies
    in the picture's own pixels, what it was keyed from, and the flat background when keyed."""
    return {"box": list(mark.box), "source": mark.source,
            "background": list(mark.background) if mark.background else None}


def mark_from_png(data: bytes, box: tuple[int, int, int, int], source: str,
                  background: tuple[int, int, int] | None = None) -> Mark:
    with Image.open(io.BytesIO(data)) as im:
        return Mark(im.convert("RGBA"), box, source, background)


# -- views for the CNN ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _textures(size: tuple[int, int]) -> tuple[Image.Image, ...]:
    """Three fixed backgrounds (same every run): a warm mid-tone, a dark cool one, a light
    fabric-like weave; low-frequency colour noise like out-of-focus scenery. Made once per
    process (7 ms, three quarters of ``mark_views``); callers draw on copies (``_on``)."""
    rng = np.random.default_rng(VIEW_SEED)
    w, h = size
    out = []
    for base, spread in (((150, 120, 95), 45.0), ((45, 55, 70), 30.0), ((215, 210, 200), 25.0)):
        coarse = rng.normal(0.0, spread, (6, 8, 3)).astype(np.float32)
        field = np.asarray(Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC), dtype=np.float32) - 128
        fine = rng.normal(0.0, spread / 4, (h, w, 1)).astype(np.float32)
        out.append(Image.fromarray(np.clip(np.array(base, np.float32) + field + fine, 0, 255).astype(np.uint8)))
    return tuple(out)


def _on(mark: Image.Image, background: Image.Image, share: float) -> Image.Image:
    """``mark`` composited centred on ``background`` at ``share`` of its width (or height)."""
    bw, bh = background.size
    k = min(share * bw / mark.width, share * bh / mark.height)
    sprite = mark.convert("RGBa").resize((max(1, round(mark.width * k)), max(1, round(mark.height * k))),
                                         Image.Resampling.LANCZOS).convert("RGBA")
    canvas = background.convert("RGB").copy()
    canvas.paste(sprite, ((bw - sprite.width) // 2, (bh - sprite.height) // 2), sprite)
    return canvas


VIEW_SIZE = (288, 216)  # a query tile's usual 4:3


def mark_views(mark: Mark) -> list[Image.Image]:
    """RGB renderings of the mark embedded as extra vectors of its picture: on neutral grey
    filling most of the frame, then on the three textures at 45-60 % of the frame's width (where
    the partial-copy pass's tiles see a mark of 10-25 % of a photo's width)."""
    grey = Image.new("RGB", VIEW_SIZE, (128, 128, 128))
    views = [_on(mark.image, grey, 0.8)]
    views += [_on(mark.image, texture, share) for texture, share in zip(_textures(VIEW_SIZE), (0.6, 0.5, 0.45))]
    return views


# -- verification --------------------------------------------------------------------------------

@dataclass
class MarkEdit(EditReport):
    """An ``EditReport`` for a mark found in a scene, which it describes as such."""

    width_share: float = 0.0   # the mark's width over the query's width
    position: str = ""         # "lower left", "centre", ...

    def describe(self) -> str:
        text = f"the mark, at {self.width_share * 100:.0f} % of the picture's width, {self.position}"
        if abs(self.rotation_deg) >= 1:
            text += f", tilted {abs(self.rotation_deg):.0f}°"
        return text


@dataclass(frozen=True)
class MarkMatch:
    score: float
    colour_de: float
    query_polygon: list[list[float]]  # the mark's outline in the query's own pixels
    edit: MarkEdit
    sure: bool = True  # False: scored WEAK_SCORE-MIN_SCORE; the CNN must confirm it (mark_crop)
    # The correlation of the mark's inner detail where it was found (_detail); None: the mark is
    # one solid shape with no detail inside its outline.
    detail: float | None = None


def _position(cx: float, cy: float) -> str:
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    if not row and not col:
        return "centre"
    if not row:
        return f"centre {col}"
    return f"{row} {col}" if col else f"{row} centre"


def _edges(plane: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import cv2

    gx = cv2.Sobel(plane, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(plane, cv2.CV_32F, 0, 1, ksize=3)
    power = gx * gx + gy * gy
    if power.ndim == 3:  # the planes' mean: numpy's mean over the last axis, in a thirtieth of its time
        planes: npt.NDArray[np.float32] = np.asarray(power, dtype=np.float32)
        mean = planes[..., 0] + planes[..., 1]
        mean += planes[..., 2]
        mean /= 3
        power = mean
    return np.asarray(cv2.GaussianBlur(np.sqrt(power), (0, 0), EDGE_SIGMA), dtype=np.float32)


@dataclass(frozen=True)
class _Template:
    grey: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]    # alpha > 0.5
    edges: npt.NDArray[np.float32]   # the mark's outline and inner edges
    rgb: npt.NDArray[np.float32]     # the mark's colours, turned like the rest
    alpha: npt.NDArray[np.float32]   # 0-255

    @functools.cached_property
    def grey_counts(self) -> bool:
        """The mark has inner contrast: its grey, masked, is a term of the score too."""
        return float(self.grey[self.mask > 0].std()) > 8.0


def _template(mark: Image.Image, width: int, angle: float) -> _Template | None:
    """The mark at ``width``, turned by ``angle`` degrees (counter-clockwise as seen)."""
    import cv2

    k = width / mark.width
    height = max(1, round(mark.height * k))
    if min(width, height) < MIN_TEMPLATE_PX:
        return None
    rgba = np.asarray(mark.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    if angle:
        pad = int(math.ceil(0.2 * max(width, height)))
        rgba = np.asarray(cv2.copyMakeBorder(rgba, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0)),
                          dtype=np.float32)
        rot = cv2.getRotationMatrix2D((rgba.shape[1] / 2, rgba.shape[0] / 2), angle, 1.0)
        rgba = np.asarray(cv2.warpAffine(rgba, rot, rgba.shape[1::-1], flags=cv2.INTER_LINEAR), dtype=np.float32)
        ys, xs = np.nonzero(rgba[..., 3] > 5)
        rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgb = np.ascontiguousarray(rgba[..., :3], np.float32)
    alpha = rgba[..., 3] / 255.0
    grey = np.ascontiguousarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32), np.float32)
    # The outline is where alpha changes (the scene behind is unknown, but differs); inner edges
    # are where the mark's own colour (COLOUR_EDGES) or grey changes.
    inner = _edges(rgb * alpha[..., None]) if COLOUR_EDGES else _edges(grey * alpha)
    edges = np.ascontiguousarray(_edges(alpha * 255.0) + inner, np.float32)
    return _Template(grey, (alpha > 0.5).astype(np.float32), edges, rgb, np.ascontiguousarray(alpha * 255.0, np.float32))


def _ncc(image: npt.NDArray[np.float32], squared: npt.NDArray[np.float32], template: npt.NDArray[np.float32],
         mask: npt.NDArray[np.float32] | None, floor: float,
         integrals: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] = (np.zeros(0), np.zeros(0)),
         ) -> npt.NDArray[np.float32]:
    """Normalised cross-correlation of ``template`` over ``image``, counting the pixels under
    ``mask`` only (None: all; ``integrals`` are then the image's and its square's summed-area
    tables), by plain correlations (OpenCV's FFT path, unlike its masked mode). A
    window's spread is floored at ``floor`` per pixel, so a flat patch of the scene (sky, a wall)
    cannot correlate by chance."""
    import cv2

    n = float(mask.sum()) if mask is not None else float(template.size)
    weights = mask if mask is not None else np.ones_like(template)
    centred = np.ascontiguousarray(weights * (template - float((weights * template).sum()) / max(n, 1.0)),
                                   np.float32)
    energy = float((centred * centred).sum())
    if n < 16 or energy <= 1e-6:
        return np.full((1, 1), -1.0, np.float32)
    num = cv2.matchTemplate(image, centred, cv2.TM_CCORR)
    # The element-wise float64 arithmetic below runs in OpenCV's kernels where it can (the same IEEE
    # operations in the same order as numpy's, so the same values, in about 40 % of numpy's time
    # over these strided views); the division by the scalar n stays numpy's (OpenCV would multiply
    # by its reciprocal).
    if mask is None:  # window sums from summed-area tables: no correlation needed
        th, tw = template.shape
        ii, ii2 = integrals
        s1 = np.asarray(cv2.subtract(ii[th:, tw:], ii[:-th, tw:]), dtype=np.float64)
        cv2.subtract(s1, ii[th:, :-tw], dst=s1)
        cv2.add(s1, ii[:-th, :-tw], dst=s1)
        s2 = np.asarray(cv2.subtract(ii2[th:, tw:], ii2[:-th, tw:]), dtype=np.float64)
        cv2.subtract(s2, ii2[th:, :-tw], dst=s2)
        cv2.add(s2, ii2[:-th, :-tw], dst=s2)
    else:
        s1 = np.asarray(cv2.matchTemplate(image, mask, cv2.TM_CCORR), dtype=np.float64)
        s2 = np.asarray(cv2.matchTemplate(squared, mask, cv2.TM_CCORR), dtype=np.float64)
    # spread = max(s2 - s1^2 / n, n floor^2), then sqrt(spread * energy): in place, in that order.
    cv2.multiply(s1, s1, dst=s1)
    s1 /= n
    cv2.subtract(s2, s1, dst=s2)
    spread = np.maximum(s2, n * floor * floor, out=s2)
    spread *= energy
    cv2.sqrt(spread, dst=spread)
    ratio = num.astype(np.float64)
    ratio /= spread
    return np.asarray(ratio, dtype=np.float32)


def _planes(rgb: npt.NDArray[np.float32], mark: Mark) -> "_Planes":
    """``rgb``'s planes for finding ``mark`` in it, summed-area tables included."""
    gray = np.ascontiguousarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32), np.float32)
    edges = _edges(rgb if COLOUR_EDGES else gray)
    likeness = _likeness(rgb, mark)
    return _Planes(gray, edges, likeness, rgb, gray * gray, (_integral(edges), _integral(edges * edges)),
                   (_integral(likeness), _integral(likeness * likeness)))


def _width(low: float, high: float, i: int, n: int, base: float, k: float) -> int:
    """The ``i``-th of ``n`` template widths, geometric between ``low`` and ``high`` of ``base``
    px, at the search's scale ``k``."""
    return int(round(low * (high / low) ** (i / (n - 1)) * base * k))


def _place(planes: "_Planes", mark: Image.Image, width: int, angle: float, *, grey: bool = True
           ) -> tuple[float, tuple[int, int], _Template] | None:
    """The best place of ``mark`` at ``width``, turned by ``angle``, in ``planes``: the mean of the
    edge, colour-likeness and (with ``grey``, when the mark has inner contrast) grey correlations,
    less the size penalty; None when the template is too small or does not fit."""
    import cv2

    made = _template(mark, width, angle)
    if made is None:
        return None
    th, tw = made.grey.shape
    rh, rw = planes.edges.shape
    if tw > rw or th > rh:
        return None
    terms = [_ncc(planes.edges, planes.edges, made.edges, None, EDGE_FLOOR, planes.edge_tables),
             _ncc(planes.likeness, planes.likeness, made.alpha, None, LIKENESS_FLOOR, planes.likeness_tables)]
    if grey and made.grey_counts:
        terms.append(_ncc(planes.gray, planes.gray2, made.grey, made.mask, GREY_FLOOR))
    scores = sum(terms[1:], terms[0]) / len(terms)
    _lo, score, _lo_at, at = cv2.minMaxLoc(scores)
    # Chance correlations shrink as 1/sqrt(pixels): a small template must correlate better.
    score -= SIZE_PENALTY / math.sqrt(th * tw)
    return float(score), (int(at[0]), int(at[1])), made


def _quick_score(region: Image.Image, mark: Mark) -> float:
    """The best upright correlation of ``mark`` (``_place`` without the grey term) over ``region``
    (RGB) shrunk to QUICK_SIDE px on its long side, at QUICK_SCALES widths between MIN_SHARE and
    MAX_SHARE of its width; -1 when no width fits. About a tenth of a search."""
    rw, rh = region.size
    k = min(1.0, QUICK_SIDE / max(rw, rh))
    small = region.resize((max(1, round(rw * k)), max(1, round(rh * k))), Image.Resampling.BILINEAR)
    planes = _planes(np.asarray(small, dtype=np.float32), mark)
    places = [_place(planes, mark.image, _width(MIN_SHARE, MAX_SHARE, i, QUICK_SCALES, rw, k), 0.0, grey=False)
              for i in range(QUICK_SCALES)]
    return max((place[0] for place in places if place is not None), default=-1.0)


def verify_mark(query: Image.Image, box: tuple[int, int, int, int] | None, mark: Mark, *,
                frame: tuple[int, int] | None = None, min_score: float = MIN_SCORE,
                max_colour_de: float = MAX_COLOUR_DE, tile_width: int | None = None,
                weak_score: float | None = None) -> MarkMatch | None:
    """Find ``mark`` in ``query`` (the RGB working picture) within ``box`` (working pixels; None:
    the whole picture), over SCALES template widths and the ANGLES turns (when the upright sweep
    reached TURN_FLOOR): the places with the best
    mean of the masked grey correlation (when the mark has inner contrast) and the edge
    correlation, the first of which whose colours agree with the mark's (chromaticity distance
    at most ``max_colour_de``) is accepted at ``min_score``. The widths run between MIN_SHARE and
    MAX_SHARE of the query's width, or TILE_SHARES of ``tile_width`` when the CNN found the mark
    through a tile of that width. ``frame``: the query's own size, for the polygon. With
    ``weak_score``, when no place reaches ``min_score`` the first that reaches ``weak_score``
    (aligned when that raised its score) with the mark's colours is returned with ``sure`` False,
    and so is a place reaching ``min_score`` in nearly the mark's colours (UNSURE_COLOUR_DE)."""
    import cv2

    qw, qh = query.size
    x0, y0, x1, y1 = box if box is not None else (0, 0, qw, qh)
    region = query.crop((x0, y0, x1, y1)).convert("RGB")
    if QUICK_FLOOR is not None and _quick_score(region, mark) < QUICK_FLOOR:
        return None  # the quick look: nothing there looks enough like the mark to search for it
    k = min(1.0, SEARCH_SIDE / max(qw, qh))
    if k < 1.0:
        region = region.resize((max(1, round(region.width * k)), max(1, round(region.height * k))),
                               Image.Resampling.BILINEAR)
    rgb = np.asarray(region, dtype=np.float32)
    planes = _planes(rgb, mark)
    aspect = mark.image.height / mark.image.width

    def attempt(width: int, angle: float) -> tuple[float, int, float, tuple[int, int], _Template] | None:
        place = _place(planes, mark.image, width, angle)
        return None if place is None else (place[0], width, angle, place[1], place[2])

    # Upright at every scale, then the turns at the three best scales.
    upright = []
    low, high, base = (MIN_SHARE, MAX_SHARE, qw) if tile_width is None else (*TILE_SHARES, tile_width)
    sx_frame = (frame or (qw, qh))[0] / qw  # query px -> frame px
    for i in range(SCALES):
        width = _width(low, high, i, SCALES, base, k)
        if max(width, width * aspect) / k * sx_frame < MIN_MARK_SIDE:
            continue
        place = attempt(width, 0.0)
        if place is not None:
            upright.append(place)
    tried = sorted(upright, key=lambda f: -f[0])[:3]
    turned = [f for w in {f[1] for f in tried} for angle in ANGLES if angle
              for f in [attempt(w, angle)] if f is not None] if tried and tried[0][0] >= TURN_FLOOR else []
    # (score, colour distance, angle, width, warp, template) of the accepted place, and of the first
    # unsure one (weak_score); the peaks are tried best first.
    found: tuple[float, float, float, int, npt.NDArray[np.float32], _Template] | None = None
    weak: tuple[float, float, float, int, npt.NDArray[np.float32], _Template] | None = None
    for score, width, angle, (ax, ay), made in sorted(upright + turned, key=lambda f: -f[0])[:PEAKS]:
        if score < min(REFINE_FLOOR, min_score):
            break
        warp = np.array([[1.0, 0.0, ax], [0.0, 1.0, ay]], np.float32)
        if score < min_score:
            refined = _refine(planes, made, warp)
            if refined is None or refined[0] < min_score + REFINED_MARGIN:
                if weak is None and weak_score is not None:
                    if refined is not None and refined[0] > score:
                        score, warp = refined
                    if score >= weak_score:
                        colour_de = _colour_distance(_patch(rgb, warp, made), made)
                        if colour_de <= max_colour_de:
                            weak = (score, colour_de, angle, width, warp, made)
                continue
            score, warp = refined
        colour_de = _colour_distance(_patch(rgb, warp, made), made)
        if colour_de <= max_colour_de:
            found = (score, colour_de, angle, width, warp, made)
            break
        if weak is None and weak_score is not None and colour_de <= UNSURE_COLOUR_DE:
            weak = (score, colour_de, angle, width, warp, made)  # the shape is there, its colours nearly
    sure = found is not None
    if found is None:
        if weak is None:
            return None
        found = weak
    score, colour_de, angle, width, warp, made = found
    th, tw = made.grey.shape
    # The mark's outline: its box turned by ``angle`` about the template's centre, then placed by
    # the warp (a shift to the peak, or the refined alignment).
    fw, fh = frame or (qw, qh)
    sx, sy = fw / qw, fh / qh
    cx, cy = tw / 2, th / 2
    mh = width * aspect
    t = math.radians(angle)
    corners = []
    for px, py in ((-width / 2, -mh / 2), (width / 2, -mh / 2), (width / 2, mh / 2), (-width / 2, mh / 2)):
        rx = px * math.cos(t) + py * math.sin(t)   # OpenCV's angle turns counter-clockwise as seen
        ry = -px * math.sin(t) + py * math.cos(t)
        qx, qy = warp @ np.array([cx + rx, cy + ry, 1.0], np.float32)
        corners.append([(x0 + float(qx) / k) * sx, (y0 + float(qy) / k) * sy])
    xs = [c[0] for c in corners]
    ys = [c[1] for c in corners]
    width_share = (max(xs) - min(xs)) / fw
    centre = ((max(xs) + min(xs)) / 2 / fw, (max(ys) + min(ys)) / 2 / fh)
    linear = warp[:, :2].astype(np.float64)
    scale = (width / k) * sx * math.sqrt(abs(float(np.linalg.det(linear)))) / max(1, mark.box[2] - mark.box[0])
    # Image rows run downwards: a warp turning clockwise as seen has a positive angle here.
    turned_by = float(angle) - math.degrees(math.atan2(float(linear[1, 0]), float(linear[0, 0])))
    edit = MarkEdit(scale=scale, rotation_deg=round(turned_by, 1), mirrored=False, visible_fraction=1.0,
                    query_coverage=(max(xs) - min(xs)) * (max(ys) - min(ys)) / (fw * fh), aspect_change=1.0,
                    perspective=False, width_share=round(width_share, 4), position=_position(*centre))
    detail = _detail(planes, made, warp)
    return MarkMatch(round(score, 4), round(colour_de, 2), corners, edit, sure,
                     None if detail is None else round(detail, 4))


@dataclass(frozen=True)
class _Planes:
    """The searched region's planes, at search size (``_planes``): grey, edge map, likeness to the
    mark's colours, RGB; the grey's squares and the summed-area tables of the edge map and the
    likeness (and their squares), for the correlations of ``_place``."""
    gray: npt.NDArray[np.float32]
    edges: npt.NDArray[np.float32]
    likeness: npt.NDArray[np.float32]
    rgb: npt.NDArray[np.float32]
    gray2: npt.NDArray[np.float32]
    edge_tables: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]
    likeness_tables: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _patch(plane: npt.NDArray[np.float32], warp: npt.NDArray[np.float32], made: _Template) -> npt.NDArray[np.float32]:
    """``plane`` seen through ``warp`` (template -> region pixels), at the template's size."""
    import cv2

    th, tw = made.grey.shape
    out: npt.NDArray[np.float32] = np.asarray(
        cv2.warpAffine(plane, warp, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE), dtype=np.float32)
    return out


def _score_at(planes: _Planes, made: _Template, warp: npt.NDArray[np.float32]) -> float:
    """verify_mark's combined correlation, less SIZE_PENALTY, of the template at one placement."""
    terms = []
    for plane, template, mask, floor in ((planes.edges, made.edges, None, EDGE_FLOOR),
                                         (planes.likeness, made.alpha, None, LIKENESS_FLOOR),
                                         (planes.gray, made.grey, made.mask, GREY_FLOOR)):
        if mask is not None and not made.grey_counts:
            continue
        terms.append(_ncc_here(_patch(plane, warp, made), template,
                               np.ones_like(template) if mask is None else mask, floor))
    th, tw = made.grey.shape
    return sum(terms) / len(terms) - SIZE_PENALTY / math.sqrt(th * tw)


def _detail(planes: _Planes, made: _Template, warp: npt.NDArray[np.float32]) -> float | None:
    """The correlation of the mark's inner detail at one placement: the score's terms (edges,
    colour likeness, grey) counted only inside the mark's convex hull shrunk by DETAIL_INSET of
    its size, so that the outline that every disc, square or badge shares drops out and what is
    left is the mark's own pattern (its holes, letters, inner edges). None when that pattern is
    flat: the mark is a solid shape (under DETAIL_HOLES of holes) of one grey."""
    import cv2

    th, tw = made.grey.shape
    solid = (made.alpha > 127).astype(np.uint8)
    points = cv2.findNonZero(solid)
    if points is None:
        return None
    hull = np.zeros_like(solid)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    inset = max(1, round(DETAIL_INSET * max(th, tw)))
    inner = cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inset + 1, 2 * inset + 1)))
    mask = inner.astype(np.float32)
    if float(mask.sum()) < 16:
        return None
    # The holes (where the scene shows through) make the shape's detail: its edges and colour
    # likeness count when there are some; the grey, its inner contrast, counts on the mark's own
    # pixels only, when it has some.
    candidates = []
    if float((made.alpha[mask > 0] < 128).mean()) >= DETAIL_HOLES:
        candidates += [(planes.edges, made.edges, mask, EDGE_FLOOR),
                       (planes.likeness, made.alpha, mask, LIKENESS_FLOOR)]
    if made.grey_counts:
        candidates.append((planes.gray, made.grey, mask * made.mask, GREY_FLOOR))
    terms = []
    for plane, template, where, floor in candidates:
        counted = where > 0
        if int(counted.sum()) < 16 or float(template[counted].std()) < DETAIL_FLAT:
            continue
        terms.append(_ncc_here(_patch(plane, warp, made), template, where, floor))
    return sum(terms) / len(terms) if terms else None


def _ncc_here(patch: npt.NDArray[np.float32], template: npt.NDArray[np.float32], mask: npt.NDArray[np.float32],
              floor: float) -> float:
    """:func:`_ncc` of a template over a patch of its own size (one placement), in numpy: OpenCV's
    correlation pads small arrays for its FFT and costs ~1 ms a call here."""
    n = float(mask.sum())
    centred = mask * (template - float((mask * template).sum()) / max(n, 1.0))
    energy = float((centred * centred).sum())
    if n < 16 or energy <= 1e-6:
        return -1.0
    p = patch.astype(np.float64)
    s1, s2 = float((mask * p).sum()), float((mask * p * p).sum())
    spread = max(s2 - s1 * s1 / n, n * floor * floor)
    return float((centred * p).sum()) / math.sqrt(spread * energy)


def _refine(planes: _Planes, made: _Template, warp: npt.NDArray[np.float32]
            ) -> tuple[float, npt.NDArray[np.float32]] | None:
    """The template aligned to the region from ``warp`` by ECC on the edge maps (an affine warp,
    within REFINE_SCALE and REFINE_SHEAR of the start), and its score there; None when ECC does
    not converge or runs away."""
    import cv2

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, REFINE_ITERATIONS, 1e-4)
    everywhere = np.ones(planes.edges.shape, np.uint8)
    try:
        _cc, fitted = cv2.findTransformECC(made.edges, planes.edges, warp.copy(), cv2.MOTION_AFFINE, criteria,
                                           everywhere, 3)
    except cv2.error:
        return None  # no convergence (a flat or foreign patch)
    found = np.asarray(fitted, dtype=np.float32)
    linear = found[:, :2].astype(np.float64)
    sv = np.linalg.svd(linear, compute_uv=False)
    if not (np.all(np.isfinite(found)) and REFINE_SCALE[0] <= sv.min() and sv.max() <= REFINE_SCALE[1]
            and sv.max() / max(sv.min(), 1e-9) <= 1.0 + REFINE_SHEAR and np.linalg.det(linear) > 0):
        return None
    th, tw = made.grey.shape
    if float(np.abs(found[:, 2] - warp[:, 2]).max()) > 0.5 * max(th, tw):
        return None  # wandered off the peak
    return _score_at(planes, made, found), found


def _chroma_planes(rgb: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Per pixel (r, g) over r + g + b and a quarter of the brightness, as three planes: hue that
    shading keeps."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    total = r + g + b
    floor = np.maximum(total, np.float32(30.0))
    return r / floor, g / floor, 0.25 * total / 765.0


def _chroma(rgb: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """``_chroma_planes`` stacked on the last axis (float32)."""
    return np.stack(_chroma_planes(rgb), axis=-1).astype(np.float32)


def _palette(mark: Mark) -> npt.NDArray[np.float32] | None:
    """The mark's PALETTE main colours in ``_chroma``'s terms (seeded k-means), once per Mark
    object; None when it has too few opaque pixels."""
    import cv2

    if "palette" not in mark.derived:
        rgba = np.asarray(mark.image, dtype=np.float32).reshape(-1, 4)
        pixels = rgba[rgba[:, 3] > 127, :3]
        if len(pixels) > 4000:
            pixels = pixels[:: len(pixels) // 4000 + 1]
        centres = None
        if len(pixels) >= PALETTE:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
            cv2.setRNGSeed(VIEW_SEED)
            _c, _labels, found = cv2.kmeans(_chroma(pixels), PALETTE, None, criteria, 2,  # type: ignore[call-overload]
                                            cv2.KMEANS_PP_CENTERS)
            centres = np.asarray(found, dtype=np.float32)
        mark.derived["palette"] = centres
    palette: npt.NDArray[np.float32] | None = mark.derived["palette"]
    return palette


def _likeness(rgb: npt.NDArray[np.float32], mark: Mark) -> npt.NDArray[np.float32]:
    """How close each query pixel's colour lies to one of the mark's PALETTE main colours, 0-255:
    correlated with the mark's alpha it finds the mark's shape in its own colours."""
    centres = _palette(mark)
    if centres is None:
        return np.zeros(rgb.shape[:2], np.float32)
    # The distance to one centre at a time, over _chroma's planes: the same float32 sums in the
    # same order as over a (h, w, PALETTE, 3) array, without it.
    planes = _chroma_planes(rgb)
    distances = []
    for centre in centres:
        d = np.abs(planes[0] - centre[0])
        d += np.abs(planes[1] - centre[1])
        d += np.abs(planes[2] - centre[2])
        distances.append(d)
    distance = functools.reduce(np.minimum, distances)
    return np.ascontiguousarray(255.0 * np.clip(1.0 - distance / LIKENESS_SPREAD, 0.0, 1.0), np.float32)


def _integral(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    import cv2

    return np.asarray(cv2.integral(image.astype(np.float64)), dtype=np.float64)


def _colour_distance(patch: npt.NDArray[Any], made: _Template) -> float:
    """Mean chromaticity distance (r, g over r + g + b, x 100) between the mark's pixels and the
    query's under them: shading and exposure scale all three channels, which it ignores; a
    different hue does not. Pixels too dark for a hue on either side are left out."""
    inside = made.mask > 0
    if patch.shape[:2] != inside.shape:
        return 999.0
    ref, got = made.rgb[inside], patch[inside]
    ref_sum, got_sum = ref.sum(axis=1), got.sum(axis=1)
    if (ref_sum > 60).sum() < 0.2 * len(ref):
        # A dark mark has no hue to compare: it must be dark where it is found. Its copies keep it
        # so (shading scales a black near zero); a dark disc or square "found" in another logo's
        # red or grey shape is not (docs/matching.md, "Marks": DARK_MARK_LIFT).
        luma = np.array([0.299, 0.587, 0.114], np.float32)
        lift = float(np.median(got @ luma)) - float(np.median(ref @ luma))
        return 0.0 if lift <= DARK_MARK_LIFT else 999.0
    lit = (ref_sum > 60) & (got_sum > 60)
    if lit.sum() < 0.2 * len(ref):  # the query dark there: compare lightness order instead (grey carries it)
        return 0.0
    ref_c = ref[lit, :2] / ref_sum[lit, None]
    got_c = got[lit, :2] / got_sum[lit, None]
    return float(100.0 * np.abs(ref_c - got_c).sum(axis=1).mean())


UNSURE = "mark_unsure"  # the reason of an unsure mark's Verification, until the CNN confirms it


def mark_verification(query: Image.Image, mark: Mark, *, frame: tuple[int, int],
                      box: tuple[int, int, int, int] | None = None, tile_width: int | None = None,
                      min_score: float = MIN_SCORE, weak_score: float | None = None) -> Verification | None:
    """:func:`verify_mark` as a ``geometry.Verification`` (model ``"mark"``, ``inlier_ratio`` the
    correlation, the reference polygon the mark's box), or None. An unsure place (``weak_score``)
    comes back not accepted, with reason ``UNSURE``, for the caller to confirm (:func:`mark_crop`,
    :func:`crop_confirms`)."""
    found = verify_mark(query, box, mark, frame=frame, tile_width=tile_width, min_score=min_score,
                        weak_score=weak_score)
    if found is None or vague(found, min_score):
        return None
    x0, y0, x1, y1 = mark.box
    return Verification(accepted=found.sure, reason="mark" if found.sure else UNSURE, inliers=0,
                        inlier_ratio=found.score, model="mark", appearance=found.detail,
                        query_polygon=found.query_polygon,
                        reference_polygon=[[x0, y0], [x1, y0], [x1, y1], [x0, y1]], edit=found.edit)


def vague(found: MarkMatch, min_score: float = MIN_SCORE) -> bool:
    """Whether an unsure place that scored under ``min_score`` (WEAK_SCORE and up) showed too
    little of the mark's inner detail (under WEAK_DETAIL_MIN) to be put to the CNN: its outline
    and colours alone correlated, as a look-alike's do. A mark with no detail to correlate (a
    solid shape: detail None) is left to the CNN as before."""
    return (not found.sure and found.score < min_score and found.detail is not None
            and found.detail < WEAK_DETAIL_MIN)


def indistinct(result: Verification) -> bool:
    """Whether a mark found (:func:`mark_verification`) showed too little of its inner detail to be
    told from a look-alike of the same outline: detail under DETAIL_MIN, or none (a solid shape).
    Such a find is confirmed by the CNN as an unsure one is."""
    return result.model == "mark" and (result.appearance is None or result.appearance < DETAIL_MIN)


def crop_floor(result: Verification) -> float:
    """The crop cosine (:func:`crop_confirms`) at which the CNN confirms ``result``: WEAK_CROP_COSINE
    for a place that scored under MIN_SCORE, CROP_COSINE for a sure place without detail."""
    return WEAK_CROP_COSINE if result.inlier_ratio < MIN_SCORE else CROP_COSINE


def detailed(result: Verification) -> bool:
    """Whether a mark found showed its inner detail as only the mark itself does (DETAIL_SURE):
    a late search's mark is then accepted without the CNN."""
    return result.model == "mark" and result.appearance is not None and result.appearance >= DETAIL_SURE


def mark_crop(query: Image.Image, polygon: Sequence[Sequence[float]], *,
              frame: tuple[int, int]) -> Image.Image | None:
    """The place a mark was found at (``polygon``, in the query's own pixels ``frame``) with some
    of its surroundings, as the CNN is shown it to confirm an unsure find: the polygon's box grown
    by CROP_MARGIN and widened to 4:3 (the mark views' frame), cut from ``query`` (the working
    picture). None when the place is under WEAK_MIN_SIDE pixels on its long side."""
    xs = [float(p[0]) for p in polygon]
    ys = [float(p[1]) for p in polygon]
    if max(max(xs) - min(xs), max(ys) - min(ys)) < WEAK_MIN_SIDE:
        return None
    sx, sy = query.width / frame[0], query.height / frame[1]
    w, h = (max(xs) - min(xs)) * sx, (max(ys) - min(ys)) * sy
    cx, cy = (max(xs) + min(xs)) / 2 * sx, (max(ys) + min(ys)) / 2 * sy
    half_w = max(w, h * 4 / 3) * CROP_MARGIN / 2
    half_h = half_w * 3 / 4
    box = (max(0, round(cx - half_w)), max(0, round(cy - half_h)),
           min(query.width, round(cx + half_w)), min(query.height, round(cy + half_h)))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return query.crop(box)


def crop_confirms(hits: Sequence[tuple[int, float]], ref_id: int, *, floor: float | None = None) -> float | None:
    """The cosine that confirms an unsure mark of ``ref_id``: the vector index's nearest vector to
    the place's crop (``hits``, best first; a picture's or one of its mark views') belongs to that
    reference, at ``floor`` (default CROP_COSINE) or more. None: not confirmed."""
    if not hits:
        return None
    vector_id, cosine = hits[0]
    if vector_reference(int(vector_id)) != ref_id or cosine < (CROP_COSINE if floor is None else floor):
        return None
    return float(cosine)


def _tile_pasted(query: Image.Image, h: npt.NDArray[np.float64], mark: Mark, frame: tuple[int, int]) -> bool:
    """Whether the query shows the mark's flat tile pasted around it: points between the mark's box
    and the picture's border, mapped by ``h``, mostly within TILE_DELTA of the background colour,
    and points just outside the tile's outline, at their median, TILE_DELTA farther from it than
    those inside. Else the mark was printed on a surface of about that colour (white paper around
    a mark on white) and the copy is the mark: the tile's outline is not in the query."""
    if mark.background is None:
        return False
    x0, y0, x1, y1 = mark.box
    rw, rh = x1 + x0, y1 + y0  # about the picture's size: the mark's margins mirrored
    inside = [((x0 + x) / 2, (y0 + y) / 2) for x in (0, rw) for y in (0, rh)]
    inside += [((x0 + x1) / 2, y0 / 2), ((x0 + x1) / 2, (y1 + rh) / 2), (x0 / 2, (y0 + y1) / 2),
               ((x1 + rw) / 2, (y0 + y1) / 2)]
    mx, my = TILE_OUTSIDE * rw, TILE_OUTSIDE * rh
    outside = [(x, y) for x in (-mx, rw + mx) for y in (-my, rh + my)]
    outside += [(rw / 2, -my), (rw / 2, rh + my), (-mx, rh / 2), (rw + mx, rh / 2)]
    rgb = np.asarray(query.convert("RGB"), dtype=np.float32)
    near = _background_distances(rgb, h, inside, mark, frame)
    if len(near) < 4 or float(np.mean(near < TILE_DELTA)) < 0.75:
        return False
    beyond = _background_distances(rgb, h, outside, mark, frame)
    return len(beyond) < 3 or float(np.median(beyond)) - float(np.median(near)) > TILE_DELTA


def _background_distances(rgb: npt.NDArray[np.float32], h: npt.NDArray[np.float64],
                          points: Sequence[tuple[float, float]], mark: Mark, frame: tuple[int, int]
                          ) -> npt.NDArray[np.float32]:
    """The RGB distances from the mark's background colour of the query's pixels (``rgb``) at the
    reference's ``points`` that ``h`` maps inside it (``frame``: the pixels ``h`` maps to)."""
    assert mark.background is not None
    mapped = np.array([[x, y, 1.0] for x, y in points]) @ h.T
    height, width = rgb.shape[:2]
    sx, sy = width / frame[0], height / frame[1]
    background = np.array(mark.background, np.float32)
    found = []
    for px, py, pw in mapped:
        if pw <= 1e-9:
            continue
        qx, qy = int(px / pw * sx), int(py / pw * sy)
        if 0 <= qx < width and 0 <= qy < height:
            found.append(float(np.linalg.norm(rgb[qy, qx] - background)))
    return np.array(found, np.float32)


def as_mark(result: Verification, mark: Mark, *, frame: tuple[int, int], query: Image.Image | None = None
            ) -> Verification:
    """A geometric verification of a picture that has a mark, told as the mark's when the copy is
    the mark small in a larger picture: the mark's box mapped by the fitted transform (reference
    to query pixels) becomes the region, and the edit report speaks of the mark. A copy of the
    whole picture (the mark wider than MAX_SHARE_AS_MARK of the query) or of the whole tile (its
    flat background seen around the mark in ``query``) is left as it is."""
    if not result.accepted or not result.transform or result.edit is None:
        return result
    h = np.asarray(result.transform, dtype=np.float64)
    if query is not None and _tile_pasted(query, h, mark, frame):
        return result
    x0, y0, x1, y1 = mark.box
    pts = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]]) @ h.T
    if np.any(pts[:, 2] <= 1e-9):
        return result
    fw, fh = frame
    quad = np.clip(pts[:, :2] / pts[:, 2:], 0, [fw, fh])
    width_share = float(quad[:, 0].max() - quad[:, 0].min()) / fw
    if width_share > MAX_SHARE_AS_MARK or width_share <= 0:
        return result
    centre = (float(quad[:, 0].max() + quad[:, 0].min()) / 2 / fw, float(quad[:, 1].max() + quad[:, 1].min()) / 2 / fh)
    edit = MarkEdit(**{f.name: getattr(result.edit, f.name) for f in fields(EditReport)},
                    width_share=round(width_share, 4), position=_position(*centre))
    return replace(result, query_polygon=quad.tolist(), reference_polygon=[[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                   edit=edit)
