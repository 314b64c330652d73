"""Image files, served only after the tenant check (there is no public media path).

Thumbnails are made on the fly and kept in the cache; every response is private to
the browser that asked for it.
"""
from __future__ import annotations

import io

from django.core.cache import cache
from django.db.models.fields.files import FieldFile
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from catalog.files import RENDITION_SIZES, file_response, harden, rendition_cache_key
from matching.portal import selectors
from matching.portal.access import PortalRequest, portal_view
from matching.portal.views.common import found

CACHE_CONTROL = "private, max-age=3600"


RENDITIONS = RENDITION_SIZES


def _serve(request: HttpRequest, field: FieldFile, image_format: str | None) -> HttpResponseBase:
    """``image_format``: the decoded format recorded on the row (None: read from the file, never its name)."""
    if not field:
        raise Http404("No file.")
    size = RENDITIONS.get(request.GET.get("size", ""))
    if size:
        return _rendition(field, size)
    try:
        handle = field.open("rb")
    except OSError:
        raise Http404("The file is missing from storage.") from None
    response = file_response(handle, image_format=image_format)
    response["Cache-Control"] = CACHE_CONTROL
    return response


def _rendition(field: FieldFile, pixels: int) -> HttpResponse:
    """A JPEG no larger than ``pixels`` a side, upright (EXIF), alpha on white: any browser shows it."""
    assert field.name is not None  # _serve checked that there is a file
    key = rendition_cache_key(field.name, pixels)
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
    response = harden(HttpResponse(data, content_type="image/jpeg"))
    response["Cache-Control"] = CACHE_CONTROL
    return response


@portal_view()
def image_file(request: PortalRequest, pk: int) -> HttpResponseBase:
    image = found(selectors.image_of(request.organisation, pk))
    return _serve(request, image.file, image.format)


@portal_view()
def image_mark(request: PortalRequest, pk: int) -> HttpResponseBase:
    """The mark extracted from a protected image: an RGBA PNG whose alpha is the mask."""
    image = found(selectors.image_of(request.organisation, pk))
    return _serve(request, image.mark, "PNG")


@portal_view()
def check_file(request: PortalRequest, pk: int) -> HttpResponseBase:
    check = found(selectors.check_of(request.organisation, pk))
    return _serve(request, check.file, None)


@portal_view()
def match_evidence(request: PortalRequest, pk: int) -> HttpResponseBase:
    match = found(selectors.match_of(request.organisation, pk))
    return _serve(request, match.evidence, "PNG")
