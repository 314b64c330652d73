"""Test images: scikit-image's bundled photos and copies the tests make of them."""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "moon", "page", "text"]


@lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels > 0).astype(np.uint8) * 255
    return Image.fromarray(pixels).convert("RGB")


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
