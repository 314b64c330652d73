"""Marks printed on product-like surfaces, for the ``marks`` suite (issue 14, item 4).

A logo in the wild is often not pasted on a photo but printed, woven or
stamped on a product: a shirt, a wooden box, a paper bag, a metal plate. This
module makes such copies procedurally, with code of its own (the training side
has its own generator, ``training.augment.mark_view``; none of it is used here):

* a **surface** (:func:`surface`), 640x480 or 512x512: ``fabric`` (a weave of
  threads in a random garment colour), ``wood`` (warped growth rings),
  ``paper`` (off-white with fibres and grain) or ``brushed metal`` (grey with
  streaks along one direction and a broad highlight);
* the mark **printed** on it (:func:`print_on_surface`) at 10-25 % of the
  width, at a random place: the ink takes the surface's fine texture (the weave
  shows through a print, the grain through a stamp), and one light field
  shades surface and mark alike (a ramp and a soft highlight: the shading
  follows the surface, not the mark); sometimes a drop shadow (a sticker or an
  emblem standing off the surface, 35 %), sometimes the whole product seen at
  an angle (a plane turned by 5-15 degrees, 50 %), sometimes blurred
  (0.5-1.5 px, 40 %), then JPEG (quality 60-90).

Returns the picture, the mark's box in it (its corners, clockwise from the
top-left, after the tilt) and the tags the suite reports rows by. Pure numpy and
PIL; deterministic given the rng.
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from .attacks import Polygon, blur_and_jpeg, homography_matrix, plane_tilt, random_sign

__all__ = ["SURFACES", "print_on_surface", "surface"]

SURFACES = ("fabric", "wood", "paper", "brushed metal")
SIZES = ((640, 480), (512, 512))

Array = npt.NDArray[np.float32]


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, int]) -> Array:
    """Low-frequency noise (about zero, spread about one) over ``size`` (w, h) from a ``cells`` grid."""
    w, h = size
    coarse = rng.normal(0.0, 1.0, (cells[1], cells[0])).astype(np.float32)
    img = Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _fabric(rng: np.random.Generator, w: int, h: int) -> Array:
    base = rng.uniform(20, 230, 3)
    period = float(rng.uniform(3.0, 6.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = 1.5 * _smooth_noise(rng, (w, h), (10, 8))
    weft = np.sin(2 * math.pi * (xx + warp) / period)
    warp_threads = np.sin(2 * math.pi * (yy - warp) / period)
    weave = 0.5 * (weft * (warp_threads > 0) + warp_threads * (weft <= 0))
    fuzz = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    detail = 1.0 + 0.12 * weave + 0.05 * fuzz
    return (base[None, None, :] * detail[..., None]).astype(np.float32)


def _wood(rng: np.random.Generator, w: int, h: int) -> Array:
    light = np.array([190, 140, 90], np.float32) * float(rng.uniform(0.7, 1.15))
    dark = light * float(rng.uniform(0.55, 0.75))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along_x = rng.random() < 0.5
    across = yy if along_x else xx
    warp = 18.0 * _smooth_noise(rng, (w, h), (4, 3)) + 4.0 * _smooth_noise(rng, (w, h), (16, 12))
    rings = 0.5 + 0.5 * np.sin(2 * math.pi * (across + warp) / float(rng.uniform(9, 22)))
    grain = _smooth_noise(rng, (w, h), (w // 2, 6) if along_x else (6, h // 2))
    t = np.clip(rings ** 2 + 0.08 * grain, 0, 1)[..., None]
    return (light * (1 - t) + dark * t).astype(np.float32)


def _paper(rng: np.random.Generator, w: int, h: int) -> Array:
    base = np.array([236, 230, 216], np.float32) + rng.uniform(-18, 10, 3).astype(np.float32)
    grain = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    fibres = _smooth_noise(rng, (w, h), (w // 6, h // 6))
    blotch = _smooth_noise(rng, (w, h), (5, 4))
    detail = 1.0 + 0.025 * grain + 0.03 * fibres + 0.03 * blotch
    return (base[None, None, :] * detail[..., None]).astype(np.float32)


def _brushed_metal(rng: np.random.Generator, w: int, h: int) -> Array:
    import cv2

    level = float(rng.uniform(120, 200))
    tint = np.array([1.0, 1.0, 1.0], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    streaks = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    horizontal = rng.random() < 0.5
    # Brushing: noise smeared along one direction.
    smeared = np.asarray(cv2.blur(streaks, (25, 1) if horizontal else (1, 25)), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    across = (yy / h) if horizontal else (xx / w)
    highlight = np.exp(-((across - float(rng.uniform(0.2, 0.8))) ** 2) / 0.05)
    detail = 1.0 + 0.6 * smeared + 0.25 * highlight
    return (level * tint[None, None, :] * detail[..., None]).astype(np.float32)


_MAKERS = {"fabric": _fabric, "wood": _wood, "paper": _paper, "brushed metal": _brushed_metal}


def surface(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Array:
    """An ``(h, w, 3)`` float RGB surface of ``kind`` (one of ``SURFACES``), unlit."""
    return _MAKERS[kind](rng, *size)


def _light(rng: np.random.Generator, w: int, h: int) -> Array:
    """One light field over the product: a ramp across it and a soft highlight, 0.6-1.3."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = rng.uniform(-1, 1, 2)
    ramp = (xx / w - 0.5) * d[0] + (yy / h - 0.5) * d[1]
    cx, cy = rng.uniform(0, 1, 2)
    spot = np.exp(-(((xx / w - cx) ** 2 + (yy / h - cy) ** 2) / float(rng.uniform(0.05, 0.3))))
    field = float(rng.uniform(0.75, 1.05)) + 0.35 * ramp + float(rng.uniform(0.0, 0.3)) * spot
    return np.clip(field, 0.6, 1.3).astype(np.float32)


def print_on_surface(mark: Image.Image, rng: np.random.Generator, *, jpeg: bool = True
                     ) -> tuple[Image.Image, Polygon, tuple[str, ...]]:
    """``mark`` (RGBA) printed on a random product-like surface; see the module's docstring."""
    import cv2

    kind = SURFACES[int(rng.integers(0, len(SURFACES)))]
    w, h = SIZES[int(rng.integers(0, len(SIZES)))]
    tilt = rng.random() < 0.5
    # Seen at an angle, the flat product is drawn larger and the view crops into it.
    grow = 1.25 if tilt else 1.0
    fw, fh = round(w * grow), round(h * grow)
    base = surface(kind, (fw, fh), rng)
    share = float(rng.uniform(0.10, 0.25))
    mw = max(8, round(w * share))
    mh = max(4, min(round(0.8 * h), round(mw * mark.height / mark.width)))
    if mh == round(0.8 * h):  # a tall mark: fit its height instead
        mw = max(4, round(mh * mark.width / mark.height))
    sprite = np.asarray(mark.convert("RGBa").resize((mw, mh), Image.Resampling.LANCZOS).convert("RGBA"),
                        dtype=np.float32)
    alpha, ink = sprite[..., 3:] / 255.0, sprite[..., :3]
    # Place it within the part of the product the view keeps.
    mx0, my0 = (fw - w) // 2, (fh - h) // 2
    x0 = mx0 + int(rng.integers(0, max(1, w - mw)))
    y0 = my0 + int(rng.integers(0, max(1, h - mh)))
    tags = [f"width {10 + 5 * min(2, int((share - 0.10) / 0.05))}-{15 + 5 * min(2, int((share - 0.10) / 0.05))} %",
            "on a surface", f"surface: {kind}"]
    if rng.random() < 0.35:  # a sticker or emblem: its shadow falls on the surface
        tags.append("shadow")
        dx, dy = (rng.uniform(0.02, 0.06, 2) * mw * np.array([random_sign(rng), 1])).round().astype(int)
        shade = np.zeros((fh, fw), np.float32)
        sx, sy = x0 + int(dx), y0 + int(dy)
        ys, xs = slice(max(0, sy), min(fh, sy + mh)), slice(max(0, sx), min(fw, sx + mw))
        shade[ys, xs] = alpha[ys.start - sy:ys.stop - sy, xs.start - sx:xs.stop - sx, 0]
        blurred = np.asarray(cv2.GaussianBlur(shade, (0, 0), max(1.0, 0.03 * mw)), dtype=np.float32)
        base *= (1.0 - float(rng.uniform(0.3, 0.55)) * blurred)[..., None]
    # The ink takes the surface's fine texture (its colour divided by its own smooth version).
    region = base[y0:y0 + mh, x0:x0 + mw]
    smooth = np.asarray(cv2.GaussianBlur(np.ascontiguousarray(region.mean(axis=2)), (0, 0), 6), dtype=np.float32)
    texture = (region.mean(axis=2) / np.maximum(smooth, 1.0))[..., None]
    printed = ink * (1.0 + float(rng.uniform(0.4, 1.0)) * (texture - 1.0))
    base[y0:y0 + mh, x0:x0 + mw] = alpha * printed + (1.0 - alpha) * region
    base *= _light(rng, fw, fh)[..., None]
    flat = Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8), "RGB")
    box = np.array([(x0, y0), (x0 + mw, y0), (x0 + mw, y0 + mh), (x0, y0 + mh)], dtype=np.float64)
    if tilt:
        tags.append("perspective")
        # The product plane turned about an axis through its centre, then the w x h view cut
        # from the middle (the turned plane still covers it: it shrinks by at most ~8 %).
        turned = plane_tilt(fw, fh, float(rng.uniform(5, 15)) * random_sign(rng), int(rng.integers(0, 2)))
        dst = turned + (w / 2, h / 2)
        src = np.array([(0, 0), (fw, 0), (fw, fh), (0, fh)], dtype=np.float64)
        picture = flat.transform((w, h), Image.Transform.PERSPECTIVE, tuple(homography_matrix(dst, src)),
                                 Image.Resampling.BICUBIC)
        forward = homography_matrix(src, dst)
        hm = np.append(forward, 1.0).reshape(3, 3)
        mapped = np.c_[box, np.ones(4)] @ hm.T
        box = mapped[:, :2] / mapped[:, 2:]
    else:
        picture = flat.crop((mx0, my0, mx0 + w, my0 + h))
        box = box - (mx0, my0)
    return blur_and_jpeg(picture, rng, tags, jpeg=jpeg), box.tolist(), tuple(tags)
