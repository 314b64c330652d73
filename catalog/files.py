"""Stored image files: their names and how every file response of the project is served.

Uploaded bytes are only ever named and typed from the format the decoder found
(``LoadedImage.format``), never from the uploader's file name: a valid PNG named
``poc.html`` is stored as ``<uuid>.png`` and served as ``image/png``. Every response
that carries a stored file, or a download made from stored files, is hardened the
same way: an explicit type, ``nosniff``, and a sandboxing CSP, so
even a file with a bad name stored before this rule cannot run script on our origin.
"""
from __future__ import annotations

from typing import IO, TypeVar

from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase

Response = TypeVar("Response", bound=HttpResponseBase)

# Decoded format (matching.core.loading.ALLOWED_FORMATS) -> extension, content type.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                 "BMP": "image/bmp", "TIFF": "image/tiff"}
OCTET_STREAM = "application/octet-stream"
# The image still shows when opened on its own (img-src 'self' for the browser's image document).
SANDBOX_CSP = "sandbox; default-src 'none'; img-src 'self'"

_SAFE_EXTENSIONS = frozenset({*EXTENSIONS.values(), "jpeg", "tiff", "npz"})


# The portal's downscaled copies of stored images, kept in the cache under these keys.
RENDITION_SIZES = {"thumb": 360, "view": 1600}


def rendition_cache_key(name: str, pixels: int) -> str:
    return f"portal-rendition:{pixels}:{name}"


def rendition_cache_keys(name: str) -> list[str]:
    """Every cached rendition of a stored file (removed with the file)."""
    return [rendition_cache_key(name, pixels) for pixels in RENDITION_SIZES.values()]


def extension_for(image_format: str) -> str:
    """The stored file's extension for a decoded format; ``bin`` for anything else."""
    return EXTENSIONS.get((image_format or "").upper(), "bin")


def safe_extension(filename: str) -> str:
    """The extension of a name built by our services, kept only when it is one we write ourselves."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return ext if ext in _SAFE_EXTENSIONS else "bin"


def content_type_for(image_format: str) -> str:
    return CONTENT_TYPES.get((image_format or "").upper(), OCTET_STREAM)


def sniff_format(head: bytes) -> str:
    """The image format from the first bytes of a file that was validated when stored ("" when unknown).

    For stored files whose row does not record the decoded format (a check's suspect image).
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    return ""


def harden(response: Response) -> Response:
    """Headers every response carrying stored or derived file bytes gets."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = SANDBOX_CSP
    return response


def file_response(handle: IO[bytes], *, image_format: str | None = None) -> FileResponse:
    """Serve an open stored image inline, typed from its decoded format, never from its name.

    ``image_format`` is the format recorded on the row; ``None`` reads it from the file's
    first bytes. Anything not a known image format goes out as ``application/octet-stream``.
    """
    if image_format is None:
        image_format = sniff_format(handle.read(16))
        handle.seek(0)
    response = FileResponse(handle, content_type=content_type_for(image_format))
    response["Content-Disposition"] = "inline"
    return harden(response)
