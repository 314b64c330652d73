"""Safe image loading: untrusted bytes in, a validated RGB picture out.

Every failure caused by the input is an :class:`~matching.core.errors.ImageError`
with a stable ``code``; no other exception escapes :func:`load_image` for any
byte string. Defences, in order of cost: byte-size limit, format allow-list
(only those Pillow plugins are even tried), declared pixel count checked
before any pixel is decoded, then the decode itself (truncation is an error,
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).

Memory per image is bounded (docs/architecture.md, "Memory per image"): the
decoded raster may take at most ``max_decode_bytes`` (a large JPEG is decoded
at 1/2..1/8 scale to fit), and everything after it -- conversion to RGB,
flattening transparency, EXIF orientation, the pixel digest, the reduction to
the working size of at most ``max_side`` pixels -- runs strip by strip.
:func:`heavy_work` caps how many threads of a process do this at once.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageError,
    ImageTooSmall,
    TooManyPixels,
    UnsupportedFormat,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "MIN_SIDE",
    "LoadedImage",
    "heavy_work",
    "load_image",
    "load_image_file",
    "sha256_hex",
]

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
MIN_SIDE = 8
# The working picture's long side. What the engine reads is far smaller:
# hashes work on 32x32 and 320x320, local features on a 640 long side
# (matching/core/geometry.py), regions of the query enlarged to 480 from
# about a quarter of it, the CNN on 224x224 tiles of about half of it; 2048
# keeps a small pasted logo in a large photo detailed enough for all of them.
DEFAULT_MAX_SIDE = 2048
# The decoded raster of any picture the pixel limit allows (4 bytes a pixel
# at most); lower it to make large PNGs fail and large JPEGs decode scaled.
DEFAULT_MAX_DECODE_BYTES = 4 * DEFAULT_MAX_PIXELS
_STRIP_BYTES = 8 * 2**20  # a strip of the picture converted at once

# Pillow's JPEG opener returns an "MPO" image for multi-picture JPEGs (most
# phone cameras); it is a JPEG file whose first picture is the photo.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Image.open only tries these plugins: hostile bytes never reach the parsers
# of formats we do not accept (EPS would even start Ghostscript on load).
_OPEN_FORMATS = tuple(sorted(ALLOWED_FORMATS))
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image ready for signal computation.

    ``image`` is mode "RGB", EXIF orientation applied, transparency flattened
    onto white, first frame only, reduced (box filter, an integer factor) to
    fit in ``max_side`` when larger. ``width``/``height`` are the picture's own
    size, after orientation (reports show them; ``image.size`` may be smaller).
    ``sha256_pixels`` identifies the decoded pixels independently of the
    container: sha256(b"RGB" + width and height as 4-byte big-endian + RGB
    bytes) at the decoded size, which is the picture's own size except for a
    JPEG too large for ``max_decode_bytes`` (decoded scaled down).
    """

    image: Image.Image
    width: int
    height: int
    format: str
    sha256_bytes: str
    sha256_pixels: str
    # The transparency (mode "L", ``image``'s size) when the picture had any: a logo uploaded as
    # an RGBA PNG keeps it as its mark's mask (matching/core/marks.py). None otherwise.
    alpha: Image.Image | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow's raster holds per pixel: 1 for 1/L/P, 2 for I;16*, 4 for every other mode
    (RGB is stored as 4 bytes too)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _wide_scale(im: Image.Image) -> float:
    """The factor :func:`_wide_to_l` applies, from the whole picture's maximum (read in strips)."""
    width, height = im.size
    rows = max(1, _STRIP_BYTES // (8 * width))
    hi = 0.0
    for top in range(0, height, rows):
        arr = np.nan_to_num(np.asarray(im.crop((0, top, width, min(height, top + rows))), dtype=np.float64))
        if arr.size:
            hi = max(hi, float(arr.max()))
    return 1.0 if hi <= 255 else (1 / 257 if hi <= 65535 else 255 / hi)


def _wide_to_l(im: Image.Image, scale: float) -> Image.Image:
    """16-bit / int32 / float greyscale to 8 bits.

    Pillow's own convert clips these at 255, which turns a 16-bit scan white.
    """
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")


def _to_rgb(im: Image.Image, *, has_alpha: bool, wide_scale: float | None) -> Image.Image:
    try:
        if wide_scale is not None:
            im = _wide_to_l(im, wide_scale)
        if not has_alpha:
            return im if im.mode == "RGB" else im.convert("RGB")  # im is a strip of its own: no copy
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    except (ValueError, OSError) as e:  # e.g. LAB has no conversion to RGB
        raise UnsupportedFormat(f"The image's pixel mode {im.mode!r} is not supported.") from e


# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATION_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_FROM_END = frozenset({3, 4, 7, 8})  # upright row 0 is the stored picture's last row (or column)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)  # ExifTags.Base.Orientation
        return value if value in _ORIENTATION_OPS else 1
    except Exception:
        # Unreadable EXIF is metadata damage, not pixel damage: keep the
        # pixels as stored rather than refusing an otherwise good image.
        return 1


def _upright_rows(im: Image.Image, orientation: int, top: int, bottom: int) -> Image.Image:
    """Rows ``[top, bottom)`` of the upright picture, cut from the stored one without
    turning all of it."""
    width, height = im.size
    extent = width if orientation in _SWAPS_AXES else height
    if orientation in _FROM_END:
        top, bottom = extent - bottom, extent - top
    box = (top, 0, bottom, height) if orientation in _SWAPS_AXES else (0, top, width, bottom)
    strip = im.crop(box)
    op = _ORIENTATION_OPS.get(orientation)
    return strip if op is None else strip.transpose(op)


def _reduce_factor(width: int, height: int, max_side: int) -> int:
    return max(1, -(-max(width, height) // max_side))  # ceil: the working picture fits in max_side


def _decode(data: bytes, max_pixels: int, max_side: int, max_decode_bytes: int) -> LoadedImage:
    try:
        opened = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as e:
        allowed = ", ".join(_OPEN_FORMATS)
        raise UnsupportedFormat(
            f"The file is not an image in an allowed format ({allowed})."
        ) from e
    with opened as im:
        fmt = _FORMAT_ALIASES.get(im.format or "", im.format or "")
        if fmt not in ALLOWED_FORMATS:
            raise UnsupportedFormat(f"Images in {fmt or 'this'} format are not accepted.")
        width, height = im.size
        # Checked on the header alone: a 30000x30000 PNG can be a few KB.
        if width * height > max_pixels:
            raise TooManyPixels(
                f"The image declares {width}x{height} pixels; the limit is {max_pixels} pixels."
            )
        if min(width, height) < MIN_SIDE:
            raise ImageTooSmall(
                f"The image is {width}x{height}; both sides must be at least {MIN_SIDE} pixels."
            )
        orientation = _orientation(im)
        if orientation in _SWAPS_AXES:
            width, height = height, width
        if fmt == "JPEG" and _bytes_per_pixel(im.mode) * im.width * im.height > max_decode_bytes:
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: ask for the working size.
            k = _reduce_factor(width, height, max_side)
            im.draft(im.mode, (-(-im.width // k), -(-im.height // k)))
        needed = _bytes_per_pixel(im.mode) * im.width * im.height
        if needed > max_decode_bytes:
            raise TooManyPixels(
                f"Decoding the {im.width}x{im.height} {fmt} image ({im.mode}) needs {needed // 2**20} MiB; "
                f"the limit is {max_decode_bytes // 2**20} MiB."
            )
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as e:
            raise CorruptImage(f"The {fmt} image is truncated or corrupt and cannot be decoded.") from e
        work, digest, alpha = _working_rgb(im, orientation, max_side)
    return LoadedImage(
        image=work,
        width=width,
        height=height,
        format=fmt,
        sha256_bytes=sha256_hex(data),
        sha256_pixels=digest,
        alpha=alpha,
    )


def _working_rgb(im: Image.Image, orientation: int, max_side: int) -> tuple[Image.Image, str, Image.Image | None]:
    """The upright RGB picture reduced to fit ``max_side``, the digest of the upright RGB
    pixels at the decoded size, and the reduced alpha when there is transparency, all made strip
    by strip: no full-size RGB, RGBA or float copy of the decoded raster is ever held
    (docs/security.md, finding 4)."""
    has_alpha = im.mode in _ALPHA_MODES or ("transparency" in im.info and im.mode in ("P", "L", "RGB"))
    wide_scale = _wide_scale(im) if im.mode in _WIDE_MODES else None
    width, height = (im.height, im.width) if orientation in _SWAPS_AXES else im.size
    k = _reduce_factor(width, height, max_side)
    rows = max(1, _STRIP_BYTES // (4 * width)) // k * k or k  # a multiple of k: strips reduce like the whole
    # A picture that is one strip at its own size is its strip: no canvas to fill and paste into
    # (a third of the time of loading a 500x500 JPEG went to those copies).
    size = (-(-width // k), -(-height // k))
    work = None if k == 1 and rows >= height else Image.new("RGB", size)
    alpha = Image.new("L", size, 255) if has_alpha else None
    digest = hashlib.sha256(b"RGB")
    digest.update(width.to_bytes(4, "big"))
    digest.update(height.to_bytes(4, "big"))
    for top in range(0, height, rows):
        rows_in = _upright_rows(im, orientation, top, min(height, top + rows))
        if alpha is not None:
            a = rows_in.convert("RGBA").getchannel("A")
            alpha.paste(a.reduce(k) if k > 1 else a, (0, top // k))
        strip = _to_rgb(rows_in, has_alpha=has_alpha, wide_scale=wide_scale)
        digest.update(strip.tobytes())
        if work is None:
            work = strip
        else:
            work.paste(strip.reduce(k) if k > 1 else strip, (0, top // k))
        del strip
    assert work is not None  # a picture has at least MIN_SIDE rows
    return work, digest.hexdigest(), alpha


def load_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> LoadedImage:
    """Decode and validate untrusted image bytes.

    Raises only :class:`ImageError` subclasses for bad input: ``EmptyFile``,
    ``FileTooLarge`` (``len(data) > max_bytes``), ``UnsupportedFormat``,
    ``TooManyPixels`` (declared width*height > ``max_pixels``, or above
    Pillow's own ``Image.MAX_IMAGE_PIXELS`` bomb limit), ``ImageTooSmall``
    (a side < ``MIN_SIDE``), ``CorruptImage``, and ``TooManyPixels`` again
    when the decoded raster would exceed ``max_decode_bytes`` even scaled.
    """
    size = len(data)
    if size == 0:
        raise EmptyFile("The file is empty.")
    if size > max_bytes:
        raise FileTooLarge(f"The file is {size} bytes; the limit is {max_bytes} bytes.")
    # catch_warnings keeps the filter change local to this call instead of
    # touching Pillow's global MAX_IMAGE_PIXELS; other Pillow warnings (bad
    # EXIF, palette transparency) are noise for an untrusted upload.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(bytes(data), max_pixels, max_side, max_decode_bytes)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TooManyPixels(f"The image has too many pixels: {e}") from e
        except Exception as e:
            # Pillow plugins raise a zoo of types (SyntaxError, struct.error,
            # EOFError, ValueError, ...) on hostile input; all mean "corrupt".
            raise CorruptImage("The image is corrupt and cannot be decoded.") from e


def load_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> LoadedImage:
    """Read ``path`` and :func:`load_image` it.

    The size is checked with ``os.stat`` first so an oversized file is refused
    without being read. ``OSError`` from the file system (missing file,
    permissions) propagates unchanged: it is not a property of the image.
    """
    size = os.stat(path).st_size
    if size == 0:
        raise EmptyFile("The file is empty.")
    if size > max_bytes:
        raise FileTooLarge(f"The file is {size} bytes; the limit is {max_bytes} bytes.")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since stat
    return load_image(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side,
                      max_decode_bytes=max_decode_bytes)


_gate_lock = threading.Lock()
_gate: tuple[int, threading.BoundedSemaphore] | None = None
_inside = threading.local()


@contextmanager
def heavy_work(limit: int) -> Iterator[None]:
    """At most ``limit`` threads of this process inside at once (decoding an image, computing
    its signals, matching it); the others wait. A thread already inside enters again freely.

    Every caller of a process passes the same limit (a setting); a different limit replaces
    the gate for the threads that enter after it.
    """
    global _gate
    if getattr(_inside, "depth", 0):
        _inside.depth += 1
        try:
            yield
        finally:
            _inside.depth -= 1
        return
    with _gate_lock:
        if _gate is None or _gate[0] != limit:
            _gate = (limit, threading.BoundedSemaphore(max(1, limit)))
        semaphore = _gate[1]
    with semaphore:
        _inside.depth = 1
        try:
            yield
        finally:
            _inside.depth = 0
