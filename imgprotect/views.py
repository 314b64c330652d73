"""Image files for the admin, served only to staff (no public media path)."""
from collections.abc import Callable
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from catalog.files import file_response
from catalog.models import ProtectedImage
from matching.models import Check, Match

# kind -> (model, file field, the decoded format of the file or None to read it from the file).
_FILES: dict[str, tuple[type[ProtectedImage] | type[Check] | type[Match], str, Callable[[Any], str | None]]] = {
    "catalog": (ProtectedImage, "file", lambda obj: obj.format),
    "check": (Check, "file", lambda obj: None),
    "evidence": (Match, "evidence", lambda obj: "PNG"),
}


@staff_member_required
def admin_image_file(request, kind: str, pk: int):
    if kind not in _FILES:
        raise Http404
    model, field_name, image_format = _FILES[kind]
    # As the admin's own pages: staff see a model's files only with its view or change permission.
    opts = model._meta
    if not any(request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}") for action in ("view", "change")):
        raise PermissionDenied
    obj = model.objects.filter(pk=pk).first()
    field = getattr(obj, field_name, None)
    if not field:
        raise Http404
    try:
        handle = field.open("rb")
    except OSError:
        raise Http404 from None
    return file_response(handle, image_format=image_format(obj))
