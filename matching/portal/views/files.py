"""Image files, served only after the tenant check (there is no public media path).

Thumbnails are made on the fly and kept in the cache; every response is private to
the browser that asked for it.
"""
from __future__ import annotations

import io
import mimetypes

from django.core.cache import cache
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse

from matching.portal import selectors
from matching.portal.access import portal_view
from matching.portal.views.common import found

CACHE_CONTROL = "private, max-age=3600"


RENDITIONS = {"thumb": 360, "view": 1600}


def _serve(request: HttpRequest, field: FieldFile, content_type: str | None = None) -> HttpResponse:
    if not field:
        raise Http404("No file.")
    size = RENDITIONS.get(request.GET.get("size", ""))
    if size:
        return _rendition(field, size)
    try:
        handle = field.open("rb")
    except OSError:
        raise Http404("The file is missing from storage.") from None
    guessed = content_type or mimetypes.guess_type(field.name)[0] or ""
    # The stored name keeps the uploader's extension: never let it pick a type a browser would run.
    response = FileResponse(handle, content_type=guessed if guessed.startswith("image/") and "svg" not in guessed
                            else "application/octet-stream")
    response["Cache-Control"] = CACHE_CONTROL
    response["Content-Disposition"] = "inline"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


def _rendition(field: FieldFile, pixels: int) -> HttpResponse:
    """A JPEG no larger than ``pixels`` a side, upright (EXIF), alpha on white: any browser shows it."""
    key = f"portal-rendition:{pixels}:{field.name}"
    data = cache.get(key)
    if data is None:
        from PIL import Image, ImageOps

        try:
            with field.open("rb") as fh, Image.open(fh) as img:
                img.draft("RGB", (pixels, pixels))  # JPEG: decode at a reduced scale, much faster
                upright = ImageOps.exif_transpose(img)
                if upright.mode in ("RGBA", "LA", "P"):
                    rgba = upright.convert("RGBA")
                    upright = Image.new("RGB", rgba.size, "white")
                    upright.paste(rgba, mask=rgba.getchannel("A"))
                upright = upright.convert("RGB")
                upright.thumbnail((pixels, pixels))
                buffer = io.BytesIO()
                upright.save(buffer, "JPEG", quality=85)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise Http404("No preview for this file.") from None
        data = buffer.getvalue()
        cache.set(key, data, 3600)
    response = HttpResponse(data, content_type="image/jpeg")
    response["Cache-Control"] = CACHE_CONTROL
    return response


@portal_view()
def image_file(request: HttpRequest, pk: int) -> HttpResponse:
    image = found(selectors.image_of(request.organisation, pk))
    return _serve(request, image.file, f"image/{image.format.lower()}" if image.format else None)


@portal_view()
def check_file(request: HttpRequest, pk: int) -> HttpResponse:
    check = found(selectors.check_of(request.organisation, pk))
    return _serve(request, check.file)


@portal_view()
def match_evidence(request: HttpRequest, pk: int) -> HttpResponse:
    match = found(selectors.match_of(request.organisation, pk))
    return _serve(request, match.evidence, "image/png")
