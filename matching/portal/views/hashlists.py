"""Hash exchange in the portal (docs/hash-exchange.md): the organisation's hash lists (import,
delete) and a collection's PDQ export for Hasher-Matcher-Actioner and ThreatExchange."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase

from catalog.models import Role
from catalog.validators import single_line
from imgprotect.errors import ServiceError
from matching import hashlists
from matching.core.hashlists import EXPORT_FORMATS, export_text
from matching.models import HashList
from matching.portal import selectors
from matching.portal.access import PortalRequest, portal_view
from matching.portal.views.common import found, org_url, page


class HashListForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[single_line])
    description = forms.CharField(required=False, max_length=500, validators=[single_line])
    alert_emails = forms.CharField(required=False, label="Alert e-mails",
                                   help_text="Comma-separated addresses told about new matches.")
    file = forms.FileField(label="Hash list",
                           help_text="PDQ hashes, one a line (or “pdq <hash>”), or CSV with a pdq column.")


@portal_view(role=Role.ADMIN, methods=["GET", "POST"])
def hash_lists(request: PortalRequest) -> HttpResponse:
    form = HashListForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            if upload.size > hashlists.MAX_IMPORT_BYTES:
                raise ServiceError(f"The file is over {hashlists.MAX_IMPORT_BYTES // (1024 * 1024)} MB; "
                                   "split the list.")
            created = hashlists.hash_list_import(
                organisation=request.organisation, name=form.cleaned_data["name"], data=upload.read(),
                description=form.cleaned_data["description"], alert_emails=form.cleaned_data["alert_emails"],
                created_by=request.user)
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Hash list “{created.name}” imported: {created.entries.count()} hashes.")
            return HttpResponseRedirect(org_url(request, "settings-hash-lists"))
    return page(request, "portal/settings/hash_lists.html", {
        "form": form, "hash_lists": hashlists.hash_lists_of(request.organisation),
        "max_entries": f"{hashlists.MAX_IMPORT_ENTRIES:,}",
    }, status=400 if request.method == "POST" else 200)


@portal_view(role=Role.ADMIN, methods=["POST"])
def hash_list_delete(request: PortalRequest, pk: int) -> HttpResponse:
    hash_list = found(HashList.objects.filter(organisation=request.organisation, pk=pk).first())
    hashlists.hash_list_delete(hash_list=hash_list)
    messages.success(request, f"Hash list “{hash_list.name}” deleted, with its match reports.")
    return HttpResponseRedirect(org_url(request, "settings-hash-lists"))


@portal_view()
def collection_hashes(request: PortalRequest, pk: int) -> HttpResponseBase:
    col = found(selectors.collection_of(request.organisation, pk))
    fmt = request.GET.get("format", "te")
    variants = request.GET.get("variants") == "1"
    if fmt not in EXPORT_FORMATS:
        return HttpResponse("Unknown format.", status=400, content_type="text/plain")
    rows = hashlists.collection_hash_rows(collection=col, variants=variants)
    content_type = "text/csv" if fmt == "csv" else "text/plain"
    response = StreamingHttpResponse(export_text(rows, fmt), content_type=f"{content_type}; charset=utf-8")
    name = f"{col.slug}-pdq-{fmt}{'-variants' if variants else ''}.{'csv' if fmt == 'csv' else 'txt'}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
