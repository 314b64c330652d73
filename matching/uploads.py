"""Validate an uploaded file before anything is stored."""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from matching.core.errors import FileTooLarge
from matching.core.loading import LoadedImage, heavy_work, load_image


def read_and_validate(upload: UploadedFile) -> tuple[bytes, LoadedImage]:
    limit = settings.IMGPROTECT_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        # Refused from its declared size, without reading it.
        raise FileTooLarge(f"The file is {upload.size} bytes; the limit is {limit} bytes.")
    data = upload.read(limit + 1)
    with heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
        return data, load_image(data, max_bytes=limit, max_pixels=settings.IMGPROTECT_MAX_PIXELS,
                                max_side=settings.IMGPROTECT_WORK_MAX_SIDE,
                                max_decode_bytes=settings.IMGPROTECT_MAX_DECODE_BYTES)
