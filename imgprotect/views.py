"""Image files for the admin, served only to staff (no public media path)."""
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404

from catalog.models import ProtectedImage
from matching.models import Check


@staff_member_required
def admin_image_file(request, kind: str, pk: int):  # type: ignore[no-untyped-def]
    model = {"catalog": ProtectedImage, "check": Check}.get(kind)
    obj = model.objects.filter(pk=pk).first() if model else None
    if obj is None or not obj.file:
        raise Http404
    try:
        return FileResponse(obj.file.open("rb"))
    except OSError:
        raise Http404 from None
