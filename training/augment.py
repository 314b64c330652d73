"""Copy attacks: the edits a copier makes, as deterministic functions of a seed.

``ATTACKS`` maps a stable name to ``f(image, rng) -> image`` at one fixed
strength (the held-out evaluation's per-attack table); ``rng`` only picks what
the attack leaves open (which corner, which direction, where the sticker goes),
so the same image and seed always give the same copy. ``random_view`` chains
1-3 edits at random strengths for training, DISC21-style: the attacks above
and ``CHAIN_EDITS`` (meme frames, padding, a small copy on another photo,
emoji, text and stripes laid over, rotation at any angle up to 45 degrees,
pixelisation, pixel shuffling, sharpening, opacity blends). ``paste`` puts a
picture into another one (the partial-copy case) and says where;
``mark_view`` keys a logo's flat background out and composites the mark
alone into a photo (the logo-in-a-scene case).

This module is the training side's own generator: the benchmark makes its
copies with ``bench/attacks.py`` and ``bench/chains.py`` (other code, other
seeds), so a head is never measured on the views it learnt from.

Pure PIL + numpy; no TensorFlow.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["ATTACKS", "Attack", "Box", "CHAIN_EDITS", "mark_view", "paste", "paste_view", "random_view"]

Attack = Callable[[Image.Image, np.random.Generator], Image.Image]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels

_WORDS = ("SALE", "look at this", "lol", "NEW", "#1 deal", "wow", "follow us", "original?")


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, 3)
    return int(r), int(g), int(b)


def resize(image: Image.Image, scale: float) -> Image.Image:
    w, h = image.size
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    import io

    buf = io.BytesIO()
    _rgb(image).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def crop_share(image: Image.Image, area: float, fx: float, fy: float) -> Image.Image:
    """Crop ``area`` of the picture (same aspect); ``fx, fy`` in [0, 1] place it (0.5 = centre)."""
    w, h = image.size
    cw, ch = max(1, round(w * area**0.5)), max(1, round(h * area**0.5))
    x0, y0 = round((w - cw) * fx), round((h - ch) * fy)
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    # expand=True keeps every original pixel; the corners become black, as most editors do.
    return _rgb(image).rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))


def hue_saturation(image: Image.Image, hue_degrees: float, saturation: float) -> Image.Image:
    hsv = np.asarray(_rgb(image).convert("HSV"), dtype=np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + round(hue_degrees * 256 / 360)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def brightness_contrast(image: Image.Image, brightness: float, contrast: float) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(_rgb(image)).enhance(brightness)).enhance(contrast)


def blur(image: Image.Image, share: float) -> Image.Image:
    """Gaussian blur with a radius of ``share`` of the longer side (so it reads the same at any size)."""
    return _rgb(image).filter(ImageFilter.GaussianBlur(max(0.5, share * max(image.size))))


def caption(image: Image.Image, rng: np.random.Generator, height_share: float = 0.15) -> Image.Image:
    """A solid bar with text added above or below (memes, watermarks, "source:" lines)."""
    w, h = image.size
    bar = max(8, round(h * height_share))
    canvas = Image.new("RGB", (w, h + bar), _colour(rng) if rng.random() < 0.3 else (255, 255, 255))
    top = rng.random() < 0.5
    canvas.paste(_rgb(image), (0, bar if top else 0))
    font = ImageFont.load_default(size=max(6, round(bar * 0.6)))
    words = " ".join(rng.choice(_WORDS, size=2))
    ImageDraw.Draw(canvas).text((max(2, w // 20), (0 if top else h) + bar * 0.15), words,
                                fill=(0, 0, 0), font=font)
    return canvas


def sticker(image: Image.Image, rng: np.random.Generator, area: float = 0.15) -> Image.Image:
    """An opaque emoji-like disc (or a box) covering ``area`` of the picture somewhere."""
    out = _rgb(image).copy()
    w, h = out.size
    side = (area * w * h) ** 0.5
    sw, sh = min(w, round(side)), min(h, round(side))
    x0, y0 = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
    draw = ImageDraw.Draw(out)
    colour = _colour(rng)
    if rng.random() < 0.5:
        # A disc covers pi/4 of its box; enlarge it so the covered share stays ``area``.
        r = side / np.pi**0.5
        cx, cy = x0 + sw / 2, y0 + sh / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        draw.ellipse((cx - r * 0.5, cy - r * 0.3, cx - r * 0.2, cy), fill=(0, 0, 0))
        draw.ellipse((cx + r * 0.2, cy - r * 0.3, cx + r * 0.5, cy), fill=(0, 0, 0))
    else:
        draw.rectangle((x0, y0, x0 + sw, y0 + sh), fill=colour)
    return out


def screenshot(image: Image.Image, rng: np.random.Generator, border_share: float = 0.08) -> Image.Image:
    """The picture inside a window: a border, a title bar with buttons, a status strip."""
    w, h = image.size
    b = max(2, round(border_share * max(w, h)))
    title = max(6, round(0.06 * h))
    background = (240, 240, 240) if rng.random() < 0.5 else (32, 33, 36)
    canvas = Image.new("RGB", (w + 2 * b, h + 2 * b + title), background)
    canvas.paste(_rgb(image), (b, b + title))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, title), fill=(60, 64, 72))
    for i, colour in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        cx = b + title * (0.6 + i)
        draw.ellipse((cx - title * 0.3, title * 0.2, cx + title * 0.3, title * 0.8), fill=colour)
    return canvas


def squash(image: Image.Image, factor: float, horizontal: bool) -> Image.Image:
    w, h = image.size
    size = (max(1, round(w / factor)), h) if horizontal else (w, max(1, round(h / factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def perspective(image: Image.Image, rng: np.random.Generator, strength: float = 0.1) -> Image.Image:
    """Move each corner inwards by up to ``strength`` of the side: a photo of a screen or print."""
    return _rgb(image).transform(image.size, Image.Transform.PERSPECTIVE, _inward_pull(image.size, rng, strength),
                                 Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _inward_pull(size: tuple[int, int], rng: np.random.Generator, strength: float) -> tuple[float, ...]:
    """PIL's perspective coefficients for each corner moved inwards by up to ``strength`` of the side."""
    w, h = size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    jitter = rng.uniform(0, strength, (4, 2)) * (w, h)
    dst = src + jitter * np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)])
    # PIL maps output -> input: solve the homography taking dst corners to src corners.
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, v])
    m = np.array(rows)
    return tuple(float(c) for c in np.linalg.solve(m[:, :8], m[:, 8]))


def noise(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    pixels = np.asarray(_rgb(image), dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _corner(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.integers(0, 2)), float(rng.integers(0, 2))


def _sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


# One fixed strength per attack, the values the benchmark table reports.
ATTACKS: dict[str, Attack] = {
    "resize_30": lambda im, rng: resize(im, 0.30),
    "jpeg_q15": lambda im, rng: jpeg(im, 15),
    "crop_center_60": lambda im, rng: crop_share(im, 0.60, 0.5, 0.5),
    "crop_corner_40": lambda im, rng: crop_share(im, 0.40, *_corner(rng)),
    "rotate_7": lambda im, rng: rotate(im, 7.0 * _sign(rng)),
    "rotate_90": lambda im, rng: rotate(im, 90.0 * _sign(rng)),
    "mirror": lambda im, rng: ImageOps.mirror(_rgb(im)),
    "grayscale": lambda im, rng: _rgb(im).convert("L").convert("RGB"),
    "hue_saturation": lambda im, rng: hue_saturation(im, 40.0 * _sign(rng), 1.5 if rng.random() < 0.5 else 0.5),
    "brightness_contrast": lambda im, rng: brightness_contrast(im, 1.0 + 0.35 * _sign(rng), 0.6),
    "blur": lambda im, rng: blur(im, 0.01),
    "caption": lambda im, rng: caption(im, rng, 0.15),
    "sticker_15": lambda im, rng: sticker(im, rng, 0.15),
    "screenshot": lambda im, rng: screenshot(im, rng, 0.08),
    "squash_1.3": lambda im, rng: squash(im, 1.3, rng.random() < 0.5),
    "perspective": lambda im, rng: perspective(im, rng, 0.12),
    "noise": lambda im, rng: noise(im, rng, 15.0),
}


def pad(image: Image.Image, rng: np.random.Generator, most: float = 0.3) -> Image.Image:
    """Flat padding of 0-``most`` of the side on each side, in one random colour."""
    w, h = image.size
    left, right = (round(float(v) * w) for v in rng.uniform(0, most, 2))
    top, bottom = (round(float(v) * h) for v in rng.uniform(0, most, 2))
    canvas = Image.new("RGB", (w + left + right, h + top + bottom), _colour(rng))
    canvas.paste(_rgb(image), (left, top))
    return canvas


def meme(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A meme frame: a thin coloured border and a text bar above, below or both."""
    w, h = image.size
    border = max(1, round(float(rng.uniform(0.01, 0.07)) * max(w, h)))
    bar = max(8, round(float(rng.uniform(0.08, 0.22)) * h))
    where = int(rng.integers(0, 3))
    top, bottom = (bar if where != 1 else 0), (bar if where != 0 else 0)
    ground = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    canvas = Image.new("RGB", (w + 2 * border, h + 2 * border + top + bottom), ground)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, top, canvas.width, top + h + 2 * border), fill=_colour(rng))
    canvas.paste(_rgb(image), (border, top + border))
    font = ImageFont.load_default(size=max(6, round(bar * 0.5)))
    ink = (255 - ground[0],) * 3
    for y in ([bar * 0.25] if top else []) + ([canvas.height - bar * 0.75] if bottom else []):
        draw.text((max(2, canvas.width // 12), y), " ".join(rng.choice(_WORDS, size=2)), fill=ink, font=font)
    return canvas


def inset(image: Image.Image, background: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A small copy (20-50 % of the width) on another photo: the whole photo is the view."""
    composite, _box = paste(background, image, rng, width_share=(0.2, 0.5))
    return composite


def emoji(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """1-4 opaque face-like discs, each 6-22 % of the shorter side across."""
    out = _rgb(image).copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for _ in range(int(rng.integers(1, 5))):
        r = max(3.0, float(rng.uniform(0.03, 0.11)) * min(w, h))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_colour(rng), outline=(0, 0, 0))
        for ex in (-0.35, 0.35):
            draw.ellipse((cx + r * (ex - 0.12), cy - r * 0.4, cx + r * (ex + 0.12), cy - r * 0.05), fill=(20, 20, 20))
        draw.arc((cx - r * 0.5, cy - r * 0.2, cx + r * 0.5, cy + r * 0.6), 20, 160, fill=(20, 20, 20),
                 width=max(1, round(r / 8)))
    return out


def text_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """1-3 lines of text (5-14 % of the height) laid over the picture, some outlined."""
    out = _rgb(image).copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for _ in range(int(rng.integers(1, 4))):
        font = ImageFont.load_default(size=max(6, round(float(rng.uniform(0.05, 0.14)) * h)))
        x, y = float(rng.uniform(-0.1, 0.7)) * w, float(rng.uniform(0.0, 0.9)) * h
        stroke = max(1, round(h / 150)) if rng.random() < 0.5 else 0
        draw.text((x, y), " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 4)))), fill=_colour(rng),
                  font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    return out


def stripes(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """2-6 bars (2-12 % of the shorter side wide, opacity 0.4-1) across the picture, all at
    one angle: horizontal, vertical, diagonal or any."""
    out = _rgb(image).convert("RGBA")
    w, h = out.size
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    angle = float((0, 90, 45, -45, rng.uniform(-90, 90))[int(rng.integers(0, 5))])
    t = np.radians(angle)
    ux, uy, reach = float(np.cos(t)), float(np.sin(t)), float(np.hypot(w, h))
    nx, ny = -uy, ux
    for _ in range(int(rng.integers(2, 7))):
        half = float(rng.uniform(0.01, 0.06)) * min(w, h)
        off = float(rng.uniform(-0.5, 0.5)) * (abs(nx) * w + abs(ny) * h)
        cx, cy = w / 2 + off * nx, h / 2 + off * ny
        draw.polygon([(cx - reach * ux - half * nx, cy - reach * uy - half * ny),
                      (cx + reach * ux - half * nx, cy + reach * uy - half * ny),
                      (cx + reach * ux + half * nx, cy + reach * uy + half * ny),
                      (cx - reach * ux + half * nx, cy - reach * uy + half * ny)],
                     fill=(*_colour(rng), int(255 * float(rng.uniform(0.4, 1.0)))))
    out.alpha_composite(layer)
    return out.convert("RGB")


def rotate_any(image: Image.Image, rng: np.random.Generator, most: float = 45.0) -> Image.Image:
    """Turned by 2-``most`` degrees either way, the frame grown, the corners black, white or a colour."""
    fill = ((0, 0, 0), (255, 255, 255), _colour(rng))[int(rng.integers(0, 3))]
    return _rgb(image).rotate(float(rng.uniform(2, most)) * _sign(rng), resample=Image.Resampling.BICUBIC,
                              expand=True, fillcolor=fill)


def pixelate(image: Image.Image, share: float) -> Image.Image:
    """Blocks of ``share`` of the longer side."""
    block = max(2, round(share * max(image.size)))
    small = _rgb(image).resize((max(1, image.width // block), max(1, image.height // block)), Image.Resampling.BOX)
    return small.resize(image.size, Image.Resampling.NEAREST)


def shuffle_blocks(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """10-45 % of the small blocks (0.8-2.5 % of the longer side) trade places."""
    a = np.asarray(_rgb(image)).copy()
    b = max(2, round(float(rng.uniform(0.008, 0.025)) * max(image.size)))
    rows, cols = a.shape[0] // b, a.shape[1] // b
    if rows * cols < 2:
        return _rgb(image)
    tiles = a[: rows * b, : cols * b].reshape(rows, b, cols, b, 3).swapaxes(1, 2).reshape(rows * cols, b, b, 3)
    chosen = rng.choice(rows * cols, size=max(2, round(rows * cols * float(rng.uniform(0.1, 0.45)))), replace=False)
    tiles[chosen] = tiles[rng.permutation(chosen)]
    a[: rows * b, : cols * b] = tiles.reshape(rows, cols, b, b, 3).swapaxes(1, 2).reshape(rows * b, cols * b, 3)
    return Image.fromarray(a, "RGB")


def sharpen(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _rgb(image).filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(1, 4)),
                                                      percent=int(rng.integers(100, 301)), threshold=2))


def opacity(image: Image.Image, background: Image.Image | None, rng: np.random.Generator) -> Image.Image:
    """The picture at 45-85 % opacity over another photo (or a flat colour), fitted to its frame."""
    im = _rgb(image)
    under = (_rgb(background).resize(im.size, Image.Resampling.BILINEAR) if background is not None
             else Image.new("RGB", im.size, _colour(rng)))
    return Image.blend(under, im, float(rng.uniform(0.45, 0.85)))


def _background(backgrounds: Sequence[Image.Image], rng: np.random.Generator) -> Image.Image | None:
    return backgrounds[int(rng.integers(0, len(backgrounds)))] if backgrounds else None


# DISC21-like edits that ``ATTACKS`` lacks, at random strengths: f(image, rng, backgrounds).
ChainEdit = Callable[[Image.Image, np.random.Generator, Sequence[Image.Image]], Image.Image]
CHAIN_EDITS: dict[str, ChainEdit] = {
    "meme": lambda im, rng, bgs: meme(im, rng),
    "pad": lambda im, rng, bgs: pad(im, rng),
    "inset": lambda im, rng, bgs: (inset(im, bgs[int(rng.integers(0, len(bgs)))], rng) if bgs
                                   else pad(im, rng, 0.6)),
    "emoji": lambda im, rng, bgs: emoji(im, rng),
    "text": lambda im, rng, bgs: text_overlay(im, rng),
    "stripes": lambda im, rng, bgs: stripes(im, rng),
    "rotate_any": lambda im, rng, bgs: rotate_any(im, rng),
    "pixelate": lambda im, rng, bgs: pixelate(im, float(rng.uniform(0.01, 0.045))),
    "shuffle": lambda im, rng, bgs: shuffle_blocks(im, rng),
    "sharpen": lambda im, rng, bgs: sharpen(im, rng),
    "opacity": lambda im, rng, bgs: opacity(im, _background(bgs, rng), rng),
    "scale_up": lambda im, rng, bgs: resize(im, float(rng.uniform(1.2, 1.6))),
}
_N_BASIC = 17  # the kinds of ``_random_attack`` below, one per ``ATTACKS`` entry


def _random_attack(image: Image.Image, rng: np.random.Generator,
                   backgrounds: Sequence[Image.Image] = ()) -> Image.Image:
    """One edit at a random strength, somewhat wider than the evaluation's (train harder than you test):
    an ``ATTACKS`` kind or a ``CHAIN_EDITS`` one, uniformly."""
    kind = int(rng.integers(0, _N_BASIC + len(CHAIN_EDITS)))
    if kind >= _N_BASIC:
        return list(CHAIN_EDITS.values())[kind - _N_BASIC](image, rng, backgrounds)
    u = float(rng.random())
    if kind == 0:
        return resize(image, 0.2 + 0.7 * u)
    if kind == 1:
        return jpeg(image, int(10 + 60 * u))
    if kind == 2:
        return crop_share(image, 0.3 + 0.6 * u, float(rng.random()), float(rng.random()))
    if kind == 3:
        return crop_share(image, 0.25 + 0.3 * u, *_corner(rng))
    if kind == 4:
        return rotate(image, (2 + 13 * u) * _sign(rng))
    if kind == 5:
        return rotate(image, 90.0 * int(rng.integers(1, 4)))
    if kind == 6:
        return ImageOps.mirror(_rgb(image))
    if kind == 7:
        return _rgb(image).convert("L").convert("RGB")
    if kind == 8:
        return hue_saturation(image, (10 + 80 * u) * _sign(rng), float(rng.uniform(0.3, 1.8)))
    if kind == 9:
        return brightness_contrast(image, float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.4, 1.5)))
    if kind == 10:
        return blur(image, 0.003 + 0.015 * u)
    if kind == 11:
        return caption(image, rng, 0.08 + 0.17 * u)
    if kind == 12:
        return sticker(image, rng, 0.05 + 0.2 * u)
    if kind == 13:
        return screenshot(image, rng, 0.02 + 0.1 * u)
    if kind == 14:
        return squash(image, 1.1 + 0.5 * u, rng.random() < 0.5)
    if kind == 15:
        return perspective(image, rng, 0.04 + 0.16 * u)
    return noise(image, rng, 4 + 26 * u)


def random_view(image: Image.Image, rng: np.random.Generator, *, max_attacks: int = 3,
                backgrounds: Sequence[Image.Image] = ()) -> Image.Image:
    """A training view: 1..``max_attacks`` random edits chained (length uniform), then sometimes a
    re-encode. ``backgrounds`` (training photos) feed the edits that need another photo (inset,
    opacity); without them those edits fall back to flat colours."""
    out = _rgb(image)
    for _ in range(int(rng.integers(1, max_attacks + 1))):
        out = _rgb(_random_attack(out, rng, backgrounds))
        if min(out.size) < 16:  # a chain of crops and downscales can shrink a small tile to nothing
            out = out.resize((max(16, out.width), max(16, out.height)), Image.Resampling.BILINEAR)
        if max(out.size) > 1024:  # padding and frames on a large photo: keep views cheap to embed
            out = resize(out, 1024 / max(out.size))
    if rng.random() < 0.3:
        out = jpeg(out, int(rng.integers(30, 90)))
    return out


def paste(background: Image.Image, picture: Image.Image, rng: np.random.Generator, *,
          width_share: tuple[float, float] = (0.15, 0.25)) -> tuple[Image.Image, Box]:
    """Paste ``picture`` at a random ``width_share`` of the background's width, anywhere; return the box."""
    bg = _rgb(background).copy()
    share = float(rng.uniform(*width_share))
    pw = max(1, round(bg.width * share))
    ph = max(1, min(bg.height, round(pw * picture.height / picture.width)))
    small = _rgb(picture).resize((pw, ph), Image.Resampling.BILINEAR)
    x0, y0 = int(rng.integers(0, bg.width - pw + 1)), int(rng.integers(0, bg.height - ph + 1))
    bg.paste(small, (x0, y0))
    return bg, (x0, y0, x0 + pw, y0 + ph)


def paste_view(picture: Image.Image, backgrounds: Sequence[Image.Image], rng: np.random.Generator,
               ) -> Image.Image:
    """A training view for partial-copy search: ``picture`` pasted into a background, then a
    window around it in which it fills 30-80 % of the width -- what one tile of
    ``Embedder.embed_crops`` sees when the copy is in it."""
    bg = backgrounds[int(rng.integers(0, len(backgrounds)))]
    composite, box = paste(bg, picture, rng)
    view = _window(composite, box, rng)
    return random_view(view, rng, max_attacks=1) if rng.random() < 0.5 else view


def mark_of(logo: Image.Image, *, tolerance: int = 40) -> Image.Image | None:
    """The mark alone, as RGBA cropped to it: the alpha channel when the logo has one, else the
    flat background (the median colour of the border) keyed out; None when nothing stands out."""
    if logo.mode == "RGBA" and np.asarray(logo.getchannel("A")).min() < 250:
        rgba = logo.copy()
    else:
        rgb = np.asarray(_rgb(logo), dtype=np.int16)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        ground = np.median(border, axis=0)
        distance = np.abs(rgb - ground).max(axis=2)
        alpha = np.clip((distance - tolerance / 2) * (255.0 / tolerance), 0, 255).astype(np.uint8)
        rgba = Image.fromarray(np.dstack([rgb.astype(np.uint8), alpha]), "RGBA")
    box = rgba.getchannel("A").point(lambda a: 255 if a > 64 else 0).getbbox()
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) < 16:
        return None
    return rgba.crop(box)


def _tilt(mark: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """A perspective pull of the RGBA mark (transparent outside)."""
    return mark.transform(mark.size, Image.Transform.PERSPECTIVE, _inward_pull(mark.size, rng, strength),
                          Image.Resampling.BICUBIC, fillcolor=(0, 0, 0, 0))


def composite_mark(mark: Image.Image, background: Image.Image, rng: np.random.Generator, *,
                   width_share: tuple[float, float] = (0.10, 0.25)) -> tuple[Image.Image, Box]:
    """The RGBA ``mark`` composited with its alpha onto ``background`` at ``width_share`` of its width,
    anywhere, sometimes tilted (perspective), shadowed or recoloured; returns the picture and the box."""
    bg = _rgb(background).convert("RGBA")
    share = float(rng.uniform(*width_share))
    mw = max(4, round(bg.width * share))
    mh = max(4, min(bg.height, round(mw * mark.height / mark.width)))
    small = mark.resize((mw, mh), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        small = _tilt(small, rng, float(rng.uniform(0.03, 0.15)))
    if rng.random() < 0.2:  # printed in another colour (white on a shirt, black on a sign)
        ink = Image.new("RGBA", small.size, (*_colour(rng), 255))
        ink.putalpha(small.getchannel("A"))
        small = ink
    x0, y0 = int(rng.integers(0, bg.width - mw + 1)), int(rng.integers(0, bg.height - mh + 1))
    if rng.random() < 0.3:  # a soft drop shadow
        shadow = Image.new("RGBA", small.size, (0, 0, 0, 0))
        shadow.putalpha(small.getchannel("A").point(lambda a: a // 2).filter(ImageFilter.GaussianBlur(max(1, mw / 40))))
        off = max(1, round(mw * 0.04))
        bg.alpha_composite(shadow, (min(bg.width - mw, x0 + off), min(bg.height - mh, y0 + off)))
    bg.alpha_composite(small, (x0, y0))
    return bg.convert("RGB"), (x0, y0, x0 + mw, y0 + mh)


def _window(composite: Image.Image, box: Box, rng: np.random.Generator) -> Image.Image:
    """A window of ``composite`` containing ``box``, which fills 30-80 % of its width."""
    x0, y0, x1, y1 = box
    pw, ph = x1 - x0, y1 - y0
    fill = float(rng.uniform(0.3, 0.8))
    ww = min(composite.width, max(pw, round(pw / fill)))
    wh = min(composite.height, max(ph, round(ww * float(rng.uniform(0.75, 1.33)))))
    wx = int(rng.integers(max(0, x1 - ww), min(x0, composite.width - ww) + 1))
    wy = int(rng.integers(max(0, y1 - wh), min(y0, composite.height - wh) + 1))
    return composite.crop((wx, wy, wx + ww, wy + wh))


def mark_view(logo: Image.Image, backgrounds: Sequence[Image.Image], rng: np.random.Generator) -> Image.Image:
    """A training view for a logo used in a scene: the mark alone (``mark_of``) composited into a
    training photo at 10-25 % of its width, seen through a window that contains it (what one tile of
    ``Embedder.embed_crops`` sees), sometimes blurred or re-encoded. A logo without a mark that
    stands out falls back to ``paste_view``."""
    mark = mark_of(logo)
    if mark is None:
        return paste_view(logo, backgrounds, rng)
    composite, box = composite_mark(mark, backgrounds[int(rng.integers(0, len(backgrounds)))], rng)
    view = _window(composite, box, rng)
    if rng.random() < 0.3:
        view = blur(view, float(rng.uniform(0.002, 0.01)))
    if rng.random() < 0.4:
        view = jpeg(view, int(rng.integers(20, 90)))
    return view
