"""The benchmark's copy attacks: one fixed strength each, deterministic given the rng.

An attack takes the reference picture, a seeded ``np.random.Generator`` (it
only picks what the attack leaves open: which corner, which direction, where
the sticker goes, which background) and a ``distractor(rng)`` callable that
returns an unrelated photo. It returns the attacked picture and, where it is
meaningful, the **true region**: the polygon ``[[x, y], ...]`` (query pixels,
clockwise from the reference's top-left corner) that the reference's content
occupies in the result. Region accuracy of a system is scored against it.

These are the canonical benchmark attacks; ``training.augment`` holds
the training augmentations. Pure PIL + numpy.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["ATTACKS", "ATTACK_NAMES", "PARTIAL_COPY_ATTACKS", "Attack", "Attacked", "Distractors",
           "Polygon", "blur_and_jpeg", "composite_mark", "homography_matrix", "key_mark", "plane_tilt",
           "random_sign", "rect"]

Polygon = list[list[float]]
Distractors = Callable[[np.random.Generator], Image.Image]

CAPTIONS = ("SALE -50% today only", "look at this lol", "NEW collection", "follow us for more",
             "when the boss says", "best deal in town", "original? who cares", "#1 in the world")


class Attacked(NamedTuple):
    image: Image.Image
    region: Polygon | None  # where the reference lies in ``image``; None when not meaningful


@dataclass(frozen=True)
class Attack:
    name: str
    apply: Callable[[Image.Image, np.random.Generator, Distractors], Attacked]
    logos_only: bool = False  # the dataset only makes this attack from logo references

    def __call__(self, image: Image.Image, rng: np.random.Generator,
                 distractor: Distractors) -> Attacked:
        return self.apply(as_rgb(image), rng, distractor)


def rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """An axis-aligned box as a polygon (x1, y1 exclusive)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def as_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _full(image: Image.Image) -> Polygon:
    return rect(0, 0, image.width, image.height)


def random_sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.BILINEAR)


# -- attacks that keep the frame --------------------------------------------------------

def _resize_30(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    return Attacked(resized(im, (round(im.width * 0.3), round(im.height * 0.3))), None)


def _jpeg_q15(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=15)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return Attacked(decoded.convert("RGB"), None)


def _mirror(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    return Attacked(ImageOps.mirror(im), None)


def _grayscale(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    return Attacked(im.convert("L").convert("RGB"), None)


def _hue_saturation(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    # Hue turned by 40 degrees either way, saturation halved or raised by half.
    hsv = np.asarray(im.convert("HSV"), dtype=np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + random_sign(rng) * round(40 * 256 / 360)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.5 if rng.random() < 0.5 else 0.5), 0, 255)
    return Attacked(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), None)


def _brightness_contrast(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    out = ImageEnhance.Brightness(im).enhance(1.0 + 0.35 * random_sign(rng))
    return Attacked(ImageEnhance.Contrast(out).enhance(1.0 + 0.4 * random_sign(rng)), None)


def _blur(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    # Radius relative to the picture so a 256 px logo and a 700 px photo blur alike.
    return Attacked(im.filter(ImageFilter.GaussianBlur(max(2.0, 0.01 * max(im.size)))), None)


def _noise(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    pixels = np.asarray(im, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, 15.0, pixels.shape).astype(np.float32)
    return Attacked(Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB"), None)


def _squash_1_3(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    w, h = im.size
    size = (round(w / 1.3), h) if rng.random() < 0.5 else (w, round(h / 1.3))
    out = resized(im, size)
    return Attacked(out, None)


def _sticker_15(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    """A smiley disc covering 15 % of the picture, drawn at 4x and scaled down (antialiased)."""
    out = im.copy()
    w, h = im.size
    diameter = min(2.0 * math.sqrt(0.15 * w * h / math.pi), float(min(w, h)))
    size = max(4, round(diameter))
    s = 4 * size
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    fill = (255, 204, 51) if rng.random() < 0.7 else (255, 105, 180)
    draw.ellipse((0, 0, s - 1, s - 1), fill=(*fill, 255), outline=(120, 80, 0, 255), width=s // 40 + 1)
    for ex in (0.33, 0.67):
        draw.ellipse((s * (ex - 0.07), s * 0.28, s * (ex + 0.07), s * 0.45), fill=(40, 30, 20, 255))
    draw.arc((s * 0.25, s * 0.3, s * 0.75, s * 0.78), 20, 160, fill=(40, 30, 20, 255), width=s // 25 + 1)
    sticker = layer.resize((size, size), Image.Resampling.LANCZOS)
    x0 = int(rng.integers(0, w - size + 1))
    y0 = int(rng.integers(0, h - size + 1))
    out.paste(sticker, (x0, y0), sticker)
    return Attacked(out, None)


# -- attacks that move the frame: their region is scored ----------------------------------

def _crop(im: Image.Image, area: float, fx: float, fy: float) -> Attacked:
    w, h = im.size
    cw, ch = max(1, round(w * math.sqrt(area))), max(1, round(h * math.sqrt(area)))
    x0, y0 = round((w - cw) * fx), round((h - ch) * fy)
    out = im.crop((x0, y0, x0 + cw, y0 + ch))
    return Attacked(out, _full(out))


def _crop_centre_60(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    return _crop(im, 0.60, 0.5, 0.5)


def _crop_corner_40(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    return _crop(im, 0.40, float(rng.integers(0, 2)), float(rng.integers(0, 2)))


def _rotate_7(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    degrees = 7.0 * random_sign(rng)
    # expand=True keeps every pixel; the corners become black, as most editors do.
    out = im.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    w, h = im.size
    t = math.radians(degrees)  # PIL turns counter-clockwise on screen (y points down)
    cos, sin = math.cos(t), math.sin(t)
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    region = [[out.width / 2 + (x - w / 2) * cos + (y - h / 2) * sin,
               out.height / 2 - (x - w / 2) * sin + (y - h / 2) * cos] for x, y in corners]
    return Attacked(out, region)


def _rotate_90(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    out = im.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)
    return Attacked(out, None)


def _caption_bar(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    w, h = im.size
    bar = max(20, round(0.18 * h))
    dark = rng.random() < 0.5
    canvas = Image.new("RGB", (w, h + bar), (0, 0, 0) if dark else (255, 255, 255))
    top = rng.random() < 0.5
    y_image = bar if top else 0
    canvas.paste(im, (0, y_image))
    text = str(CAPTIONS[int(rng.integers(0, len(CAPTIONS)))])
    size = max(8, round(bar * 0.55))
    font = ImageFont.load_default(size=size)
    while size > 8 and font.getlength(text) > 0.92 * w:  # fit the line into the bar
        size -= 2
        font = ImageFont.load_default(size=size)
    y_bar = 0 if top else h
    ImageDraw.Draw(canvas).text((w / 2, y_bar + bar / 2), text, font=font, anchor="mm",
                                fill=(255, 255, 255) if dark else (0, 0, 0))
    return Attacked(canvas, rect(0, y_image, w, y_image + h))


def _border_screenshot(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    """A coloured mat around the picture inside a browser-like window: title bar with
    buttons and an address field, a side panel and a status strip."""
    w, h = im.size
    border = max(4, round(0.05 * max(w, h)))
    title = max(16, round(0.08 * h))
    side = max(12, round(0.12 * w)) if rng.random() < 0.5 else 0
    status = max(8, round(0.04 * h))
    mat = tuple(int(v) for v in rng.integers(0, 256, 3))
    canvas = Image.new("RGB", (side + w + 2 * border, title + h + 2 * border + status), mat)
    x_image, y_image = side + border, title + border
    canvas.paste(im, (x_image, y_image))
    draw = ImageDraw.Draw(canvas)
    dark = rng.random() < 0.5
    chrome = (53, 54, 58) if dark else (222, 225, 230)
    draw.rectangle((0, 0, canvas.width - 1, title - 1), fill=chrome)
    for i, colour in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        cx, r = title * (0.6 + 0.9 * i), title * 0.22
        draw.ellipse((cx - r, title / 2 - r, cx + r, title / 2 + r), fill=colour)
    draw.rounded_rectangle((title * 3.2, title * 0.2, canvas.width - title * 0.5, title * 0.8),
                           radius=title * 0.3, fill=(32, 33, 36) if dark else (255, 255, 255))
    if side:
        draw.rectangle((0, title, side - 1, canvas.height - 1), fill=chrome)
        for y in range(title + 8, canvas.height - status - 8, max(10, title // 2 + 6)):
            draw.rectangle((side * 0.15, y, side * 0.85, y + 3), fill=(150, 150, 155))
    draw.rectangle((0, canvas.height - status, canvas.width - 1, canvas.height - 1), fill=chrome)
    return Attacked(canvas, rect(x_image, y_image, x_image + w, y_image + h))


def homography_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 8 coefficients of the projective map taking ``src`` points onto ``dst``."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, v])
    m = np.array(rows, dtype=np.float64)
    return np.linalg.solve(m[:, :8], m[:, 8])


def _perspective(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Attacked:
    """A photo taken at an angle: one side shrinks by a quarter, every corner jitters a little."""
    w, h = im.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    inward = np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], dtype=np.float64)
    shift = rng.uniform(0.0, 0.04, (4, 2)) * (w, h)
    near = int(rng.integers(0, 4))  # which side faces away from the camera
    pairs = ((0, 1), (1, 2), (2, 3), (3, 0))
    a, b = pairs[near]
    along = 0 if near in (0, 2) else 1  # the shrinking side runs along x (top/bottom) or y
    shift[a, along] += 0.125 * (w, h)[along]
    shift[b, along] += 0.125 * (w, h)[along]
    dst = src + shift * inward
    # PIL maps output pixels back to input pixels: solve dst -> src.
    out = im.transform((w, h), Image.Transform.PERSPECTIVE, tuple(homography_matrix(dst, src)),
                       Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    return Attacked(out, dst.tolist())


def fit_to(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    return ImageOps.fit(as_rgb(photo), size, Image.Resampling.BILINEAR)


def _paste_logo(im: Image.Image, rng: np.random.Generator, distractor: Distractors) -> Attacked:
    background = as_rgb(distractor(rng)).copy()
    bw, bh = background.size
    pw = max(8, round(bw * float(rng.uniform(0.15, 0.25))))
    ph = max(8, min(bh, round(pw * im.height / im.width)))
    x0, y0 = int(rng.integers(0, bw - pw + 1)), int(rng.integers(0, bh - ph + 1))
    background.paste(resized(im, (pw, ph)), (x0, y0))
    return Attacked(background, rect(x0, y0, x0 + pw, y0 + ph))


def _collage_2x2(im: Image.Image, rng: np.random.Generator, distractor: Distractors) -> Attacked:
    # Cells at most 320 px: collages are posted at screen size, not at 4x the original.
    scale = min(1.0, 320 / max(im.size))
    cw, ch = max(8, round(im.width * scale)), max(8, round(im.height * scale))
    gap = 6
    canvas = Image.new("RGB", (2 * cw + 3 * gap, 2 * ch + 3 * gap), (255, 255, 255))
    slot = int(rng.integers(0, 4))
    region: Polygon = []
    for cell in range(4):
        x0, y0 = gap + (cell % 2) * (cw + gap), gap + (cell // 2) * (ch + gap)
        if cell == slot:
            canvas.paste(resized(im, (cw, ch)), (x0, y0))
            region = rect(x0, y0, x0 + cw, y0 + ch)
        else:
            canvas.paste(fit_to(distractor(rng), (cw, ch)), (x0, y0))
    return Attacked(canvas, region)


# -- a mark keyed out of its tile and composited into a scene (issue 14) -----------------------

def key_mark(tile: Image.Image) -> Image.Image:
    """The mark alone (RGBA, tightly cropped) keyed out of a flat tile.

    The tile's colour is the median of its border; a pixel's alpha is its
    distance from that colour over the distance of the mark's own colour (the
    farthest pixels), so antialiased edges stay soft, and its colour is
    un-blended from the tile's: ``(pixel - (1 - a) * tile) / a``. A tile
    without any pixel far from its border colour keeps the whole tile, opaque.
    """
    rgb = np.asarray(as_rgb(tile), dtype=np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0)
    distance = np.linalg.norm(rgb - bg, axis=2)
    far = float(distance.max())
    if far < 24.0:  # nothing stands out of the tile: no mark to key
        return as_rgb(tile).convert("RGBA")
    ink = float(np.median(distance[distance >= 0.8 * far]))  # the mark's own colour's distance
    alpha = np.clip((distance - 8.0) / max(1.0, ink - 8.0), 0.0, 1.0)
    ys, xs = np.nonzero(alpha > 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = alpha[y0:y1, x0:x1, None]
    colour = (rgb[y0:y1, x0:x1] - (1.0 - a) * bg) / np.maximum(a, 1e-3)
    rgba = np.concatenate([np.clip(colour, 0, 255), 255.0 * a], axis=2)
    return Image.fromarray((rgba + 0.5).astype(np.uint8), "RGBA")


def plane_tilt(w: float, h: float, degrees: float, axis: int) -> np.ndarray:
    """Corners (clockwise from top-left, centred on 0) of a w x h plane turned by ``degrees``
    about its vertical (axis 0) or horizontal (axis 1) axis, seen by a pinhole camera
    two plane-widths away."""
    corners = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)])
    f = 2.0 * max(w, h)
    t = math.radians(degrees)
    depth = corners[:, axis] * math.sin(t)
    out = corners.copy()
    out[:, axis] = corners[:, axis] * math.cos(t)
    return out * (f / (f + depth))[:, None]


def composite_mark(mark: Image.Image, background: Image.Image, rng: np.random.Generator, *,
                   jpeg: bool = True) -> tuple[Image.Image, Polygon, tuple[str, ...]]:
    """``mark`` (RGBA) composited with its alpha into a copy of ``background``.

    The mark's box is 10-25 % of the photo's width, at a random place; half the
    time seen at an angle (a plane turned by 5-15 degrees), half the time turned
    in the picture by up to 10 degrees, half the time shaded (a brightness ramp
    across the mark), sometimes blurred (0.5-1.5 px, 40 %), then the whole
    picture saved as JPEG (quality 60-90) when ``jpeg``. Returns the picture, the
    mark's box in it (clockwise from its top-left corner) and the conditions'
    tags (``width 10-15 %``, ``perspective``, ``rotation``, ``shading``, ``blur``).
    """
    photo = as_rgb(background).copy()
    bw, bh = photo.size
    share = float(rng.uniform(0.10, 0.25))
    low = 10 + 5 * min(2, int((share - 0.10) / 0.05))
    tags = [f"width {low}-{low + 5} %"]
    mw = max(8, round(bw * share))
    mh = max(4, min(bh - 2, round(mw * mark.height / mark.width)))
    if mh == bh - 2:  # a tall mark: fit its height instead
        mw = max(4, round(mh * mark.width / mark.height))
    premultiplied = mark.convert("RGBa").resize((mw, mh), Image.Resampling.LANCZOS)
    arr = np.asarray(premultiplied.convert("RGBA"), dtype=np.float32)
    if rng.random() < 0.5:  # shading: light falls off across the mark, overall level changes
        tags.append("shading")
        level, slope = float(rng.uniform(0.65, 1.25)), float(rng.uniform(-0.35, 0.35))
        direction = rng.uniform(-1, 1, 2)
        yy, xx = np.mgrid[0:mh, 0:mw]
        ramp = (xx / max(1, mw - 1) - 0.5) * direction[0] + (yy / max(1, mh - 1) - 0.5) * direction[1]
        arr[..., :3] = np.clip(arr[..., :3] * (level + slope * ramp)[..., None], 0, 255)
    sprite = Image.fromarray((arr + 0.5).astype(np.uint8), "RGBA")
    corners = np.array([(-mw / 2, -mh / 2), (mw / 2, -mh / 2), (mw / 2, mh / 2), (-mw / 2, mh / 2)])
    if rng.random() < 0.5:
        tags.append("perspective")
        corners = plane_tilt(mw, mh, float(rng.uniform(5, 15)) * random_sign(rng), int(rng.integers(0, 2)))
    if rng.random() < 0.5:
        tags.append("rotation")
        t = math.radians(float(rng.uniform(2, 10)) * random_sign(rng))
        corners = corners @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = np.ceil(hi - lo).astype(int) + 2
    size = np.minimum(size, (bw, bh))
    x0 = int(rng.integers(0, bw - size[0] + 1))
    y0 = int(rng.integers(0, bh - size[1] + 1))
    dst = corners - lo + 1 + (x0, y0)
    src = np.array([(0, 0), (mw, 0), (mw, mh), (0, mh)], dtype=np.float64)
    # PIL maps output pixels back to input pixels: solve dst -> src, drawn in premultiplied
    # alpha so the edge does not pick up the transparent pixels' colour.
    layer = sprite.convert("RGBa").transform(
        (bw, bh), Image.Transform.PERSPECTIVE, tuple(homography_matrix(dst, src)),
        Image.Resampling.BICUBIC).convert("RGBA")
    photo.paste(layer, (0, 0), layer)
    return blur_and_jpeg(photo, rng, tags, jpeg=jpeg), dst.tolist(), tuple(tags)


def blur_and_jpeg(photo: Image.Image, rng: np.random.Generator, tags: list[str], *, jpeg: bool) -> Image.Image:
    """A composite's last steps: sometimes blurred (0.5-1.5 px, 40 %, tagged ``blur``), then saved
    as JPEG (quality 60-90) when ``jpeg``."""
    if rng.random() < 0.4:
        tags.append("blur")
        photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    if jpeg:
        photo = jpeg_roundtrip(photo, int(rng.integers(60, 91)))
    return photo


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def _mark_in_scene(im: Image.Image, rng: np.random.Generator, distractor: Distractors) -> Attacked:
    """The mark alone, keyed out of its tile, composited into a photo (``composite_mark``):
    a logo as it appears in the wild, unlike ``paste_logo``, which pastes the whole tile."""
    image, region, _tags = composite_mark(key_mark(im), distractor(rng), rng)
    return Attacked(image, region)


# Order is the report's row order; names are stable (they seed the rng and key raw results).
ATTACKS: dict[str, Attack] = {a.name: a for a in (
    Attack("resize_30", _resize_30),
    Attack("jpeg_q15", _jpeg_q15),
    Attack("crop_centre_60", _crop_centre_60),
    Attack("crop_corner_40", _crop_corner_40),
    Attack("rotate_7", _rotate_7),
    Attack("rotate_90", _rotate_90),
    Attack("mirror", _mirror),
    Attack("grayscale", _grayscale),
    Attack("hue_saturation", _hue_saturation),
    Attack("brightness_contrast", _brightness_contrast),
    Attack("blur", _blur),
    Attack("caption_bar", _caption_bar),
    Attack("sticker_15", _sticker_15),
    Attack("border_screenshot", _border_screenshot),
    Attack("squash_1_3", _squash_1_3),
    Attack("perspective", _perspective),
    Attack("noise", _noise),
    Attack("paste_logo", _paste_logo, logos_only=True),
    Attack("collage_2x2", _collage_2x2),
    Attack("mark_in_scene", _mark_in_scene, logos_only=True),
)}
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACKS)
# The copy is a small part of the query: docs/benchmarks.md reports these apart.
PARTIAL_COPY_ATTACKS = frozenset({"paste_logo", "collage_2x2", "mark_in_scene"})
