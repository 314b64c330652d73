"""Copy attacks: the edits a copier makes, as deterministic functions of a seed.

``ATTACKS`` maps a stable name to ``f(image, rng) -> image`` at one fixed
strength (the benchmark's per-attack table); ``rng`` only picks what the
attack leaves open (which corner, which direction, where the sticker goes),
so the same image and seed always give the same copy. ``random_view`` chains
1-3 attacks at random strengths for training, and ``paste`` puts a picture
into another one (the partial-copy case) and says where.

Pure PIL + numpy; no TensorFlow.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["ATTACKS", "Attack", "Box", "paste", "paste_view", "random_view"]

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
    w, h = image.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    jitter = rng.uniform(0, strength, (4, 2)) * (w, h)
    dst = src + jitter * np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)])
    # PIL maps output -> input: solve the homography taking dst corners to src corners.
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, v])
    m = np.array(rows)
    coeffs = np.linalg.solve(m[:, :8], m[:, 8])
    return _rgb(image).transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs),
                                 Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


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


def _random_attack(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One attack at a random strength, somewhat wider than the benchmark's (train harder than you test)."""
    kind = int(rng.integers(0, 17))
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
        return squash(image, 1.1 + 0.4 * u, rng.random() < 0.5)
    if kind == 15:
        return perspective(image, rng, 0.04 + 0.14 * u)
    return noise(image, rng, 4 + 20 * u)


def random_view(image: Image.Image, rng: np.random.Generator, *, max_attacks: int = 3) -> Image.Image:
    """A training view: 1..``max_attacks`` random attacks chained, then sometimes a re-encode."""
    out = _rgb(image)
    for _ in range(int(rng.integers(1, max_attacks + 1))):
        out = _random_attack(out, rng)
        if min(out.size) < 16:  # a chain of crops and downscales can shrink a small tile to nothing
            out = out.resize((max(16, out.width), max(16, out.height)), Image.Resampling.BILINEAR)
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
    composite, (x0, y0, x1, y1) = paste(bg, picture, rng)
    pw, ph = x1 - x0, y1 - y0
    fill = float(rng.uniform(0.3, 0.8))
    ww = min(composite.width, max(pw, round(pw / fill)))
    wh = min(composite.height, max(ph, round(ww * float(rng.uniform(0.75, 1.33)))))
    # Place the window so that it contains the pasted box, at a random offset.
    wx = int(rng.integers(max(0, x1 - ww), min(x0, composite.width - ww) + 1))
    wy = int(rng.integers(max(0, y1 - wh), min(y0, composite.height - wh) + 1))
    view = composite.crop((wx, wy, wx + ww, wy + wh))
    return random_view(view, rng, max_attacks=1) if rng.random() < 0.5 else view
