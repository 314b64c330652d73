"""Test images: scikit-image's bundled photos, a brand mark drawn here, and copies the tests make of them.

Only pictures the CNN's ranking head never saw: ``training.data.SKIMAGE_TRAIN``
lists the scikit-image pictures it learned from, and tests/test_fixtures_unseen.py
fails when a test uses one of them.
"""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Held out of training (training/data.py), all different from one another.
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "microaneurysms",
          "shepp_logan_phantom"]


def photo(name: str) -> Image.Image:
    """A fresh copy each call: a test that edits its picture in place (``thumbnail``, ``paste``) must
    not change what the next test gets."""
    return _photo(name).copy()


@lru_cache(maxsize=None)
def _photo(name: str) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:  # shepp_logan_phantom: floats in [0, 1]
        pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


@lru_cache(maxsize=None)
def drawn_logo() -> Image.Image:
    """A made-up brand mark drawn here (so no model has seen it): a coloured badge with a letter
    shape, a ring and a word on a white tile. Corners and strokes of several sizes give ORB
    keypoints to verify even when the mark is pasted small."""
    tile = Image.new("RGB", (240, 240), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.rounded_rectangle((30, 20, 210, 160), radius=30, fill=(200, 30, 60))
    draw.polygon([(60, 140), (120, 40), (180, 140)], fill=(255, 210, 0))
    draw.ellipse((95, 85, 145, 135), fill=(20, 20, 90))
    draw.rectangle((112, 100, 128, 120), fill=(255, 255, 255))
    draw.text((120, 200), "ACME", fill=(20, 20, 90), font=ImageFont.load_default(size=44), anchor="mm")
    return tile


def transparent_logo() -> Image.Image:
    """``drawn_logo`` as an RGBA logo is uploaded: its white background made transparent."""
    rgba = drawn_logo().convert("RGBA")
    arr = np.asarray(rgba).copy()
    arr[(arr[..., :3] > 250).all(axis=2), 3] = 0
    return Image.fromarray(arr, "RGBA")


def composite(scene: Image.Image, mark: Image.Image, *, width_share: float, at: tuple[float, float],
              angle: float = 0.0) -> tuple[Image.Image, list[list[float]]]:
    """``mark`` (RGBA) pasted with its alpha at ``width_share`` of ``scene``'s width, its centre at
    ``at`` (shares), turned by ``angle``; the picture and the mark's box (the turned mark's bounds,
    clockwise from the top-left)."""
    w = round(scene.width * width_share)
    sprite = mark.convert("RGBa").resize((w, round(w * mark.height / mark.width)), Image.Resampling.LANCZOS)
    if angle:
        sprite = sprite.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    sprite = sprite.convert("RGBA")
    x0 = round(at[0] * scene.width - sprite.width / 2)
    y0 = round(at[1] * scene.height - sprite.height / 2)
    out = scene.copy()
    out.paste(sprite, (x0, y0), sprite)
    box = sprite.getchannel("A").getbbox()
    assert box is not None
    bx0, by0, bx1, by1 = x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]
    return out, [[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]]


def logo_in_scene_jpeg(width_share: float = 0.2, at: tuple[float, float] = (0.7, 0.3), angle: float = 8.0,
                       scene: str = "astronaut") -> tuple[bytes, list[list[float]]]:
    """The mark of ``transparent_logo`` alone (no tile), composited into a photo and saved as JPEG:
    a logo as it appears in the wild (matching/core/marks.py); the JPEG and the mark's box."""
    picture, box = composite(photo(scene), transparent_logo().crop((28, 18, 213, 225)), width_share=width_share,
                             at=at, angle=angle)
    return encode(picture.convert("RGB"), "JPEG", quality=85), box


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def photo_png(name: str) -> bytes:
    return encode(photo(name), "PNG")


def resized_jpeg(name: str, scale: float = 0.5, quality: int = 70) -> bytes:
    img = photo(name)
    small = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))), Image.LANCZOS)
    return encode(small, "JPEG", quality=quality)


def truncated_jpeg(name: str = "coffee") -> bytes:
    data = encode(photo(name), "JPEG", quality=90)
    return data[: len(data) // 2]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
