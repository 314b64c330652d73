"""Safe image loading: untrusted bytes in, a validated RGB picture out.

Every failure caused by the input is an :class:`~matching.core.errors.ImageError`
with a stable ``code``; no other exception escapes :func:`load_image` for any
byte string. Defences, in order of cost: byte-size limit, format allow-list
(only those Pillow plugins are even tried), declared pixel count checked
before any pixel is decoded, then the decode itself (truncation is an error,
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "LoadedImage",
    "load_image",
    "load_image_file",
    "sha256_hex",
]

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
MIN_SIDE = 8

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
    onto white, first frame only; ``width``/``height`` are after orientation.
    ``sha256_pixels`` identifies the decoded pixels independently of the
    container: sha256(b"RGB" + width and height as 4-byte big-endian + RGB bytes).
    """

    image: Image.Image
    width: int
    height: int
    format: str
    sha256_bytes: str
    sha256_pixels: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pixels_digest(rgb: Image.Image) -> str:
    h = hashlib.sha256(b"RGB")
    h.update(rgb.width.to_bytes(4, "big"))
    h.update(rgb.height.to_bytes(4, "big"))
    h.update(rgb.tobytes())
    return h.hexdigest()


def _wide_to_l(im: Image.Image) -> Image.Image:
    """16-bit / int32 / float greyscale to 8 bits.

    Pillow's own convert clips these at 255, which turns a 16-bit scan white.
    """
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
    hi = float(arr.max()) if arr.size else 0.0
    scale = 1.0 if hi <= 255 else (1 / 257 if hi <= 65535 else 255 / hi)
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")


def _to_rgb(im: Image.Image) -> Image.Image:
    try:
        if im.mode in _WIDE_MODES:
            im = _wide_to_l(im)
        has_alpha = im.mode in _ALPHA_MODES or (
            "transparency" in im.info and im.mode in ("P", "L", "RGB")
        )
        if not has_alpha:
            return im.convert("RGB")
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    except (ValueError, OSError) as e:  # e.g. LAB has no conversion to RGB
        raise UnsupportedFormat(f"The image's pixel mode {im.mode!r} is not supported.") from e


def _orient(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        # Unreadable EXIF is metadata damage, not pixel damage: keep the
        # pixels as stored rather than refusing an otherwise good image.
        return im


def _decode(data: bytes, max_pixels: int) -> LoadedImage:
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
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except Exception as e:
            raise CorruptImage(f"The {fmt} image is truncated or corrupt and cannot be decoded.") from e
        rgb = _to_rgb(_orient(im))
    return LoadedImage(
        image=rgb,
        width=rgb.width,
        height=rgb.height,
        format=fmt,
        sha256_bytes=sha256_hex(data),
        sha256_pixels=_pixels_digest(rgb),
    )


def load_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Decode and validate untrusted image bytes.

    Raises only :class:`ImageError` subclasses for bad input: ``EmptyFile``,
    ``FileTooLarge`` (``len(data) > max_bytes``), ``UnsupportedFormat``,
    ``TooManyPixels`` (declared width*height > ``max_pixels``, or above
    Pillow's own ``Image.MAX_IMAGE_PIXELS`` bomb limit), ``ImageTooSmall``
    (a side < ``MIN_SIDE``) and ``CorruptImage``.
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
            return _decode(bytes(data), max_pixels)
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
    return load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
