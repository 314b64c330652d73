"""Signals computed from one image: digests and the 64-bit perceptual hash.

``compute_signals`` returns a JSON-serialisable dict; later versions add keys
("pdq", "embedding") rather than changing existing ones, and ``version`` says
which recipe produced it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .loading import LoadedImage

__all__ = ["SIGNAL_VERSION", "compute_signals", "from_hex64", "hamming64", "hex64", "phash64"]

SIGNAL_VERSION = 1
_MASK64 = (1 << 64) - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_HASH_SIZE = 8
_HIGHFREQ_FACTOR = 4
# Bit weights so that the first coefficient in row-major order is bit 63.
_WEIGHTS = np.array([1 << (63 - i) for i in range(64)], dtype=np.uint64)


def phash64(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash, bit-for-bit the recipe of ``imagehash.phash``.

    Greyscale, LANCZOS resize to 32x32, unnormalised 2-D DCT-II (columns then
    rows, as ``scipy.fftpack`` does in imagehash), top-left 8x8 block including
    DC, bit = coefficient > median of those 64. Bit 63 is coefficient (0, 0).
    """
    from scipy.fft import dct  # lazy: scipy costs ~100 ms to import

    size = _HASH_SIZE * _HIGHFREQ_FACTOR
    pixels = np.asarray(image.convert("L").resize((size, size), Image.LANCZOS), dtype=np.float64)
    # norm=None is the unnormalised transform imagehash uses; an "ortho" DCT
    # rescales row/column 0 differently and can move coefficients across the median.
    coeffs = dct(dct(pixels, axis=0), axis=1)[:_HASH_SIZE, :_HASH_SIZE]
    bits = (coeffs > np.median(coeffs)).ravel()
    return int(_WEIGHTS[bits].sum(dtype=np.uint64))


def hex64(v: int) -> str:
    """16 lowercase hex digits (zero-padded); ``v`` must be in [0, 2**64)."""
    if not 0 <= v <= _MASK64:
        raise ValueError(f"not a 64-bit unsigned value: {v}")
    return format(v, "016x")


def from_hex64(s: str) -> int:
    # int(s, 16) alone would also take "0x", "_" and surrounding spaces.
    if len(s) != 16 or not _HEX.issuperset(s):
        raise ValueError(f"expected 16 hex digits, got {s!r}")
    return int(s, 16)


def hamming64(a: int, b: int) -> int:
    return ((a ^ b) & _MASK64).bit_count()


def compute_signals(loaded: LoadedImage) -> dict[str, Any]:
    """All cheap signals of one loaded image, as a JSON-serialisable dict."""
    return {
        "version": SIGNAL_VERSION,
        "phash": hex64(phash64(loaded.image)),
        "sha256_bytes": loaded.sha256_bytes,
        "sha256_pixels": loaded.sha256_pixels,
        "width": loaded.width,
        "height": loaded.height,
        "format": loaded.format,
    }
