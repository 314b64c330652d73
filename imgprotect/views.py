"""Image files for the admin, served only to staff (no public media path)."""
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404

from catalog.models import ProtectedImage
from matching.models import Check, Match


@staff_member_required
def admin_image_file(request, kind: str, pk: int):  # type: ignore[no-untyped-def]
    model = {"catalog": ProtectedImage, "check": Check, "evidence": Match}.get(kind)
    obj = model.objects.filter(pk=pk).first() if model else None
    field = getattr(obj, "evidence" if kind == "evidence" else "file", None)
    if not field:
        raise Http404
    try:
        return FileResponse(field.open("rb"))
    except OSError:
        raise Http404 from None
