"""Signals computed from one image: digests, the 64-bit pHash and the 256-bit PDQ.

``compute_signals`` returns a JSON-serialisable dict; later versions add keys
("embedding") rather than changing existing ones, and ``version`` says which
recipe produced it. ``query_signals`` adds the eight flip/rotation variants
of both hashes, which only queries need: references store one hash each and
a mirrored or rotated copy finds them through its own variants.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from .loading import LoadedImage

__all__ = [
    "DIHEDRAL",
    "PDQ_SIDE",
    "PDQ_MIN_QUALITY",
    "SIGNAL_VERSION",
    "compute_signals",
    "from_hex256",
    "from_hex64",
    "hamming256",
    "hamming64",
    "hex256",
    "hex64",
    "pdq256",
    "pdq_dihedral",
    "phash64",
    "phash_dihedral",
    "query_signals",
]

SIGNAL_VERSION = 2
_MASK64 = (1 << 64) - 1
_MASK256 = (1 << 256) - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_HASH_SIZE = 8
_HIGHFREQ_FACTOR = 4
# Bit weights so that the first coefficient in row-major order is bit 63.
_WEIGHTS = np.array([1 << (63 - i) for i in range(64)], dtype=np.uint64)

PDQ_MIN_QUALITY = 50
"""PDQ hashes with a quality below this are not used for matching.

PDQ's quality (0-100) measures how much gradient the downsampled luminance
has; flat or nearly flat pictures (a solid colour, a faint gradient) get
low values and their bits are mostly noise, so two unrelated flat images
collide. Meta's hashing.pdf and ThreatExchange recommend discarding hashes
below 50; a flat grey image scores 0.
"""

PDQ_SIDE = 320
"""PDQ hashes the image resized (bilinear, aspect ignored) to this square.

PDQ squashes every picture to 64x64 anyway, so aspect is not information
it keeps. The fixed size matters for flips and rotations: PDQ's Jarosz box
filter has a window of round(side / 128) pixels, and an even window is off
centre by half a pixel, so on most sizes the hash of a flipped picture is
not the flipped hash (8-34 bits apart on photos, up to 128 on 256-pixel
logos, measured). At 320 = 64 * 5 the window (3) is odd and the 64-point
decimation symmetric: ``pdqhash.compute_dihedral``'s variants then equal
the hashes of the transformed pictures to 0-2 bits. It is also cheap (about
3 ms for a 1024-pixel photo, against 20 ms at full size). The price: our
hash of a photo is 4-16 bits from the full-resolution PDQ other
ThreatExchange/HMA users compute, well inside the match threshold of 31;
low-detail logo tiles drift further.
"""

DIHEDRAL: tuple[tuple[str, Image.Transpose | None], ...] = (
    ("original", None),
    ("rotate90", Image.Transpose.ROTATE_90),  # counter-clockwise, as in PIL
    ("rotate180", Image.Transpose.ROTATE_180),
    ("rotate270", Image.Transpose.ROTATE_270),
    ("flip_vertical", Image.Transpose.FLIP_TOP_BOTTOM),
    ("flip_horizontal", Image.Transpose.FLIP_LEFT_RIGHT),  # a mirror image
    ("transpose", Image.Transpose.TRANSPOSE),  # swap x and y
    ("transverse", Image.Transpose.TRANSVERSE),  # reflect in the anti-diagonal
)
"""The eight flips/rotations, in the order every ``*_dihedral`` function uses.

Variant ``j`` of an image is the hash of ``image.transpose(op_j)`` (op
``None`` = unchanged). This is the order of ``pdqhash.compute_dihedral``
(ThreatExchange's Original, Rotate90, Rotate180, Rotate270, FlipX, FlipY,
FlipPlus1, FlipMinus1). Because the eight form a group, a copy that was
rotated or flipped by any of them has a variant equal (up to rounding) to
the hash of the original.
"""


# -- pHash ------------------------------------------------------------------------

def _grey(image: Image.Image) -> Image.Image:
    """The one greyscale conversion both hashes start from (ITU-R 601 luma,
    as imagehash and PDQ use)."""
    return image if image.mode == "L" else image.convert("L")


def _phash_pixels(grey: Image.Image) -> npt.NDArray[np.float64]:
    """imagehash's input: LANCZOS 32x32 of the greyscale image."""
    size = _HASH_SIZE * _HIGHFREQ_FACTOR
    return np.asarray(grey.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)


def _phash_bits(pixels: npt.NDArray[np.float64]) -> int:
    from scipy.fft import dct  # lazy: scipy costs ~100 ms to import

    # norm=None is the unnormalised transform imagehash uses; an "ortho" DCT
    # rescales row/column 0 differently and can move coefficients across the median.
    coeffs = dct(dct(pixels, axis=0), axis=1)[:_HASH_SIZE, :_HASH_SIZE]
    bits = (coeffs > np.median(coeffs)).ravel()
    return int(_WEIGHTS[bits].sum(dtype=np.uint64))


def phash64(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash, bit-for-bit the recipe of ``imagehash.phash``.

    Greyscale, LANCZOS resize to 32x32, unnormalised 2-D DCT-II (columns then
    rows, as ``scipy.fftpack`` does in imagehash), top-left 8x8 block including
    DC, bit = coefficient > median of those 64. Bit 63 is coefficient (0, 0).
    """
    return _phash_bits(_phash_pixels(_grey(image)))


# numpy equivalents of DIHEDRAL's transposes on a (rows, cols) array.
_ARRAY_OPS = (
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, -1),
    lambda a: a[::-1],
    lambda a: a[:, ::-1],
    lambda a: a.T,
    lambda a: np.rot90(a, 2).T,
)


def phash_dihedral(image: Image.Image) -> list[int]:
    """The pHash of each of the eight :data:`DIHEDRAL` variants, in that order.

    The 32x32 greyscale thumbnail is made once and flipped/rotated before
    the DCT: the resize commutes with those transforms up to rounding, so
    variant ``j`` is within a bit or two of ``phash64(image.transpose(op_j))``
    and variant 0 is exactly ``phash64(image)``.
    """
    return _phash_variants(_grey(image))


def _phash_variants(grey: Image.Image) -> list[int]:
    pixels = _phash_pixels(grey)
    return [_phash_bits(np.ascontiguousarray(op(pixels))) for op in _ARRAY_OPS]


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


# -- PDQ ----------------------------------------------------------------------------

def _pdq_input(grey: Image.Image) -> npt.NDArray[np.uint8]:
    """The (PDQ_SIDE, PDQ_SIDE, 3) uint8 array pdqhash wants.

    pdqhash only takes RGB and computes the same 601 luma in floating
    point; feeding it the shared greyscale image in all three channels
    shrinks a third of the pixels and changed no hash bit on our photos.
    """
    # reducing_gap: an integer box reduction first, then bilinear; 35% faster
    # on large photos and the same hashes (measured).
    small = np.asarray(grey.resize((PDQ_SIDE, PDQ_SIDE), Image.Resampling.BILINEAR, reducing_gap=1.0))
    return np.repeat(small[:, :, None], 3, axis=2)


def _pdq_int(vector: npt.NDArray[Any]) -> int:
    # pdqhash's vector[0] is bit 255 of the C++ Hash256 (w[15]'s top bit),
    # which Hash256::format prints first; big-endian packing therefore gives
    # the integer whose 64 hex digits are ThreatExchange's string.
    return int.from_bytes(np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes(), "big")


def pdq256(image: Image.Image) -> tuple[int, int]:
    """Meta's PDQ hash and its quality (0-100), via the ``pdqhash`` package.

    The hash is a 256-bit int whose :func:`hex256` is the 64-digit string
    ThreatExchange and Hasher-Matcher-Actioner exchange (bit ``i`` of
    pdqhash's vector is bit ``255 - i`` of the int); split into four 64-bit
    words, word 0 holding the first 16 hex digits, it is the (1, 4) code the
    hash indexes take. Use it only when quality >= :data:`PDQ_MIN_QUALITY`.
    """
    import pdqhash  # lazy: a compiled extension only the hashing paths need

    vector, quality = pdqhash.compute(_pdq_input(_grey(image)))
    return _pdq_int(vector), int(quality)


def pdq_dihedral(image: Image.Image) -> tuple[list[int], int]:
    """PDQ of the eight :data:`DIHEDRAL` variants (in that order) and the quality.

    One pass (``pdqhash.compute_dihedral`` transforms the DCT, not the
    pixels), so it costs what :func:`pdq256` costs; variant 0 equals it.
    """
    return _pdq_variants(_grey(image))


def _pdq_variants(grey: Image.Image) -> tuple[list[int], int]:
    import pdqhash

    vectors, quality = pdqhash.compute_dihedral(_pdq_input(grey))
    return [_pdq_int(v) for v in vectors], int(quality)


def hex256(v: int) -> str:
    """64 lowercase hex digits, the PDQ string format of ThreatExchange/HMA."""
    if not 0 <= v <= _MASK256:
        raise ValueError(f"not a 256-bit unsigned value: {v}")
    return format(v, "064x")


def from_hex256(s: str) -> int:
    if len(s) != 64 or not _HEX.issuperset(s):
        raise ValueError(f"expected 64 hex digits, got {s!r}")
    return int(s, 16)


def hamming256(a: int, b: int) -> int:
    return ((a ^ b) & _MASK256).bit_count()


# -- signal dicts --------------------------------------------------------------------

def _base_signals(loaded: LoadedImage, phash: int, pdq: int, quality: int) -> dict[str, Any]:
    return {
        "version": SIGNAL_VERSION,
        "phash": hex64(phash),
        "pdq": hex256(pdq),
        "pdq_quality": quality,
        "sha256_bytes": loaded.sha256_bytes,
        "sha256_pixels": loaded.sha256_pixels,
        "width": loaded.width,
        "height": loaded.height,
        "format": loaded.format,
    }


def compute_signals(loaded: LoadedImage) -> dict[str, Any]:
    """All cheap signals of one loaded image, as a JSON-serialisable dict."""
    import pdqhash

    grey = _grey(loaded.image)
    vector, quality = pdqhash.compute(_pdq_input(grey))
    phash = _phash_bits(_phash_pixels(grey))
    return _base_signals(loaded, phash, _pdq_int(vector), int(quality))


def query_signals(loaded: LoadedImage) -> dict[str, Any]:
    """:func:`compute_signals` plus ``phash_variants`` and ``pdq_variants``:
    eight hex strings each, in :data:`DIHEDRAL` order (entry 0 is the plain hash)."""
    grey = _grey(loaded.image)
    phashes = _phash_variants(grey)
    pdqs, quality = _pdq_variants(grey)
    signals = _base_signals(loaded, phashes[0], pdqs[0], quality)
    signals["phash_variants"] = [hex64(v) for v in phashes]
    signals["pdq_variants"] = [hex256(v) for v in pdqs]
    return signals
