"""Chained edits, DISC21-style (issue 15): 1-3 edits drawn from a menu, applied in turn.

Each edit takes a picture, its own seeded ``np.random.Generator`` (it picks
the edit's strength and placement) and a ``distractor(rng)`` callable that
returns an unrelated photo (the background of ``inset``, the other picture of
``blend``). ``random_chain`` draws the length (1-3, uniform) and distinct
edits (uniform, in the order drawn), gives each edit its own seed and names
the copy by what it applied: ``chain:crop+rotate+text``. Replaying
``Chain.steps`` with ``apply_steps`` gives back the same picture. Pure PIL +
numpy; the benchmark's copies are made in memory, never written.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from .attacks import CAPTIONS, Distractors, fit_to, homography_matrix, jpeg_roundtrip, resized, as_rgb

__all__ = ["EDITS", "EDIT_NAMES", "Chain", "apply_steps", "chain_name", "random_chain"]

Edit = Callable[[Image.Image, np.random.Generator, Distractors], Image.Image]
MAX_LENGTH = 3


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, 3))
    return r, g, b


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _caption(rng: np.random.Generator) -> str:
    return str(CAPTIONS[int(rng.integers(0, len(CAPTIONS)))])


def _fitted_font(text: str, width: float, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    font = _font(size)
    while size > 8 and font.getlength(text) > width:
        size -= 2
        font = _font(size)
    return font


# -- frames and overlays ----------------------------------------------------------------------

def _frame(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """A meme / screenshot frame: a coloured border (2-8 %) and a text bar above, below or both."""
    w, h = im.size
    border = max(2, round(float(rng.uniform(0.02, 0.08)) * max(w, h)))
    bar = max(16, round(float(rng.uniform(0.10, 0.20)) * h))
    where = int(rng.integers(0, 3))  # 0 top, 1 bottom, 2 both
    top, bottom = (bar if where in (0, 2) else 0), (bar if where in (1, 2) else 0)
    dark = rng.random() < 0.5
    canvas = Image.new("RGB", (w + 2 * border, h + 2 * border + top + bottom),
                       (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, top, canvas.width - 1, top + h + 2 * border - 1), fill=_colour(rng))
    canvas.paste(im, (border, top + border))
    for y in ([top / 2] if top else []) + ([canvas.height - bottom / 2] if bottom else []):
        text = _caption(rng)
        font = _fitted_font(text, 0.92 * canvas.width, round(bar * 0.55))
        draw.text((canvas.width / 2, y), text, font=font, anchor="mm",
                  fill=(255, 255, 255) if dark else (0, 0, 0))
    return canvas


def _pad(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Flat padding, 0-30 % of the side on each side, in one random colour."""
    w, h = im.size
    left, right = (round(float(v) * w) for v in rng.uniform(0, 0.3, 2))
    top, bottom = (round(float(v) * h) for v in rng.uniform(0, 0.3, 2))
    canvas = Image.new("RGB", (w + left + right, h + top + bottom), _colour(rng))
    canvas.paste(im, (left, top))
    return canvas


def _inset(im: Image.Image, rng: np.random.Generator, distractor: Distractors) -> Image.Image:
    """A small copy (20-50 % of the width) on another photo, at a random place."""
    photo = as_rgb(distractor(rng)).copy()
    bw, bh = photo.size
    pw = max(8, round(bw * float(rng.uniform(0.20, 0.50))))
    ph = max(8, min(bh, round(pw * im.height / im.width)))
    pw = max(8, min(pw, round(ph * im.width / im.height)))
    x0, y0 = int(rng.integers(0, bw - pw + 1)), int(rng.integers(0, bh - ph + 1))
    photo.paste(resized(im, (pw, ph)), (x0, y0))
    return photo


def _smiley(size: int, rng: np.random.Generator) -> Image.Image:
    s = 4 * size
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    palette = ((255, 204, 51), (255, 105, 180), (90, 200, 250), (255, 80, 60), (120, 220, 90))
    fill = palette[int(rng.integers(0, len(palette)))]
    draw.ellipse((0, 0, s - 1, s - 1), fill=(*fill, 255), outline=(120, 80, 0, 255), width=s // 40 + 1)
    for ex in (0.33, 0.67):
        draw.ellipse((s * (ex - 0.07), s * 0.28, s * (ex + 0.07), s * 0.45), fill=(40, 30, 20, 255))
    if rng.random() < 0.5:
        draw.arc((s * 0.25, s * 0.3, s * 0.75, s * 0.78), 20, 160, fill=(40, 30, 20, 255), width=s // 25 + 1)
    else:
        draw.ellipse((s * 0.4, s * 0.55, s * 0.6, s * 0.78), fill=(40, 30, 20, 255))
    return layer.resize((size, size), Image.Resampling.LANCZOS)


def _emoji(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """1-4 emoji-like discs, each 8-20 % of the shorter side across."""
    out = im.copy()
    w, h = im.size
    for _ in range(int(rng.integers(1, 5))):
        size = max(6, round(float(rng.uniform(0.08, 0.20)) * min(w, h)))
        sticker = _smiley(size, rng)
        out.paste(sticker, (int(rng.integers(0, max(1, w - size + 1))),
                            int(rng.integers(0, max(1, h - size + 1)))), sticker)
    return out


def _text(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """1-3 lines of text (6-12 % of the height) laid over the picture, some with an outline."""
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = im.size
    for _ in range(int(rng.integers(1, 4))):
        text = _caption(rng)
        font = _fitted_font(text, 0.95 * w, round(float(rng.uniform(0.06, 0.12)) * h))
        x, y = float(rng.uniform(0.05, 0.95)) * w, float(rng.uniform(0.05, 0.95)) * h
        outline = rng.random() < 0.5
        draw.text((x, y), text, font=font, anchor="mm", fill=_colour(rng),
                  stroke_width=max(1, round(font.size / 12)) if outline and hasattr(font, "size") else 0,
                  stroke_fill=(0, 0, 0))
    return out


def _stripes(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """2-5 semi-opaque bars (opacity 0.5-0.9, 3-10 % wide) cutting the picture, all
    horizontal, vertical or diagonal."""
    w, h = im.size
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    angle = float((0, 90, 45, -45)[int(rng.integers(0, 4))])
    t = math.radians(angle)
    ux, uy = math.cos(t), math.sin(t)  # along the bar
    nx, ny = -uy, ux  # across it
    reach = math.hypot(w, h)
    for _ in range(int(rng.integers(2, 6))):
        width = float(rng.uniform(0.03, 0.10)) * min(w, h)
        offset = float(rng.uniform(-0.45, 0.45)) * (abs(nx) * w + abs(ny) * h)
        cx, cy = w / 2 + offset * nx, h / 2 + offset * ny
        half = width / 2
        poly = [(cx - reach * ux - half * nx, cy - reach * uy - half * ny),
                (cx + reach * ux - half * nx, cy + reach * uy - half * ny),
                (cx + reach * ux + half * nx, cy + reach * uy + half * ny),
                (cx - reach * ux + half * nx, cy - reach * uy + half * ny)]
        draw.polygon(poly, fill=(*_colour(rng), int(255 * float(rng.uniform(0.5, 0.9)))))
    out = im.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


# -- geometry ---------------------------------------------------------------------------------

def _crop(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """A crop keeping 40-90 % of the area (aspect within 20 % of the original's), anywhere."""
    w, h = im.size
    area, stretch = float(rng.uniform(0.40, 0.90)), float(rng.uniform(0.8, 1.2))
    cw = max(1, min(w, round(w * math.sqrt(area * stretch))))
    ch = max(1, min(h, round(w * h * area / cw)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x0, y0, x0 + cw, y0 + ch))


def _rotate(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Turned by 5-45 degrees either way, the frame grown to keep every pixel, the corners
    filled black, white or a random colour."""
    degrees = float(rng.uniform(5, 45)) * (1 if rng.random() < 0.5 else -1)
    fills = ((0, 0, 0), (255, 255, 255), _colour(rng))
    return im.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True,
                     fillcolor=fills[int(rng.integers(0, 3))])


def _perspective(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Every corner pulled inward by 0-20 % of the side: a photo taken at an angle."""
    w, h = im.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    inward = np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], dtype=np.float64)
    dst = src + rng.uniform(0.0, 0.20, (4, 2)) * (w, h) * inward
    return im.transform((w, h), Image.Transform.PERSPECTIVE, tuple(homography_matrix(dst, src)),
                        Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _mirror(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    return ImageOps.mirror(im)


def _scale(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Scaled to 25-70 % or 130-150 % of its size."""
    factor = float(rng.uniform(0.25, 0.70)) if rng.random() < 0.75 else float(rng.uniform(1.3, 1.5))
    return resized(im, (round(im.width * factor), round(im.height * factor)))


def _aspect(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """One side squeezed or stretched by 1.25-1.6."""
    factor = float(rng.uniform(1.25, 1.6))
    factor = factor if rng.random() < 0.5 else 1 / factor
    if rng.random() < 0.5:
        return resized(im, (round(im.width * factor), im.height))
    return resized(im, (im.width, round(im.height * factor)))


# -- pixels -----------------------------------------------------------------------------------

def pixelate_block(im: Image.Image, rng: np.random.Generator) -> int:
    """The block side ``pixelate`` draws: 2-4 % of the longer side."""
    return max(2, round(float(rng.uniform(0.02, 0.04)) * max(im.size)))


def pixelated(im: Image.Image, block: int) -> Image.Image:
    """Every ``block`` x ``block`` pixels their mean colour (the grid enlarged back to the size)."""
    small = im.resize((max(1, im.width // block), max(1, im.height // block)), Image.Resampling.BOX)
    return small.resize(im.size, Image.Resampling.NEAREST)


def _pixelate(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Blocks of 2-4 % of the longer side."""
    return pixelated(im, pixelate_block(im, rng))


def _shuffle(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """15-40 % of the picture's small blocks (1-2 % of the longer side) trade places."""
    a = np.asarray(im).copy()
    b = max(2, round(float(rng.uniform(0.01, 0.02)) * max(im.size)))
    rows, cols = a.shape[0] // b, a.shape[1] // b
    n = rows * cols
    if n < 2:
        return im.copy()
    chosen = rng.choice(n, size=max(2, round(n * float(rng.uniform(0.15, 0.40)))), replace=False)
    moved = rng.permutation(chosen)
    blocks = [a[(i // cols) * b:(i // cols + 1) * b, (i % cols) * b:(i % cols + 1) * b].copy() for i in moved]
    for i, block in zip(chosen, blocks, strict=True):
        a[(i // cols) * b:(i // cols + 1) * b, (i % cols) * b:(i % cols + 1) * b] = block
    return Image.fromarray(a, "RGB")


def _blur(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(max(1.0, float(rng.uniform(0.005, 0.02)) * max(im.size))))


def _sharpen(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    return im.filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(2, 4)),
                                             percent=int(rng.integers(150, 301)), threshold=2))


def _noise(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    pixels = np.asarray(im, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, float(rng.uniform(10, 30)), pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB")


def _jpeg_edit(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    return jpeg_roundtrip(im, int(rng.integers(10, 41)))


def _colour_jitter(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    """Hue turned by 20-60 degrees, saturation 0.4-1.6, brightness and contrast 0.6-1.4."""
    hsv = np.asarray(im.convert("HSV"), dtype=np.int16).copy()
    turn = float(rng.uniform(20, 60)) * (1 if rng.random() < 0.5 else -1)
    hsv[..., 0] = (hsv[..., 0] + round(turn * 256 / 360)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * float(rng.uniform(0.4, 1.6)), 0, 255)
    out = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.6, 1.4)))
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.6, 1.4)))


def _grey(im: Image.Image, rng: np.random.Generator, d: Distractors) -> Image.Image:
    return im.convert("L").convert("RGB")


def _blend(im: Image.Image, rng: np.random.Generator, distractor: Distractors) -> Image.Image:
    """An opacity blend: the picture at 50-80 % over another photo fitted to its frame."""
    other = fit_to(distractor(rng), im.size)
    return Image.blend(other, im, float(rng.uniform(0.5, 0.8)))


# Order is the report's row order; names are stable (they name copies and key raw results).
EDITS: dict[str, Edit] = {
    "frame": _frame,
    "pad": _pad,
    "inset": _inset,
    "emoji": _emoji,
    "text": _text,
    "stripes": _stripes,
    "crop": _crop,
    "rotate": _rotate,
    "perspective": _perspective,
    "mirror": _mirror,
    "scale": _scale,
    "aspect": _aspect,
    "pixelate": _pixelate,
    "shuffle": _shuffle,
    "blur": _blur,
    "sharpen": _sharpen,
    "noise": _noise,
    "jpeg": _jpeg_edit,
    "colour": _colour_jitter,
    "grey": _grey,
    "blend": _blend,
}
EDIT_NAMES: tuple[str, ...] = tuple(EDITS)


@dataclass(frozen=True)
class Chain:
    image: Image.Image
    steps: tuple[tuple[str, int], ...]  # (edit name, the seed of its own rng), in the order applied

    @property
    def edits(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    @property
    def name(self) -> str:
        return chain_name(self.edits)


def chain_name(edits: Sequence[str]) -> str:
    return "chain:" + "+".join(edits)


def apply_steps(image: Image.Image, steps: Sequence[tuple[str, int]], distractor: Distractors) -> Image.Image:
    """Apply each (edit, seed) in turn; ``random_chain``'s result is this of its ``steps``."""
    out = as_rgb(image)
    for name, seed in steps:
        out = as_rgb(EDITS[name](out, np.random.default_rng(seed), distractor))
        if min(out.size) < 8:  # a chain of shrinking edits must still leave a picture to query
            out = resized(out, (max(8, out.width), max(8, out.height)))
    return out


def random_chain(image: Image.Image, rng: np.random.Generator, distractor: Distractors, *,
                 menu: Sequence[str] = EDIT_NAMES) -> Chain:
    """1-3 distinct edits from ``menu`` (uniform length, uniform draw), each with its own seed."""
    length = int(rng.integers(1, MAX_LENGTH + 1))
    names = [str(menu[i]) for i in rng.choice(len(menu), size=min(length, len(menu)), replace=False)]
    steps = tuple((name, int(rng.integers(0, 2**31))) for name in names)
    return Chain(apply_steps(image, steps, distractor), steps)
