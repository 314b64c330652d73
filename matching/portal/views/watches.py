"""Watches: sources scanned every hour or day for new files (matching/bulk/watches.py)."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect

from catalog.models import Role
from imgprotect.errors import ServiceError
from matching.bulk import selectors as bulk_selectors
from matching.bulk import watches as watch_services
from matching.portal.access import PortalRequest, may, portal_view
from matching.portal.forms import WatchForm
from matching.portal.views.common import found, org_url, page

# What the page shows of each watch: its latest match reports, and the unusable files of its last run.
RECENT_MATCHES = 8
RECENT_ERRORS = 8


@portal_view()
def watches(request: PortalRequest) -> HttpResponse:
    return page(request, "portal/watches.html", _context(request, WatchForm(organisation=request.organisation)))


@portal_view(role=Role.ADMIN, methods=["POST"])  # as POST /api/v1/watches/ (docs/bulk.md)
def watch_create(request: PortalRequest) -> HttpResponse:
    form = WatchForm(request.POST, organisation=request.organisation)
    if form.is_valid():
        try:
            watch = watch_services.watch_create(
                organisation=request.organisation, source=form.cleaned_data["source"].strip(),
                collection=form.cleaned_data["collection"], schedule=form.cleaned_data["schedule"],
                created_by=request.user)
        except ServiceError as exc:
            form.add_error("source", exc.message)
        else:
            messages.success(request, f"Watching {watch.source}: its first run starts within a minute.")
            return HttpResponseRedirect(org_url(request, "watches"))
    return page(request, "portal/watches.html", _context(request, form), status=400)


def _context(request: PortalRequest, form: WatchForm) -> dict[str, object]:
    rows = []
    for watch in watch_services.watch_list(organisation=request.organisation):
        state, reason = watch.state_and_reason
        job = watch.last_job
        rows.append({
            "watch": watch, "state": state, "reason": reason, "job": job,
            "matches": list(watch_services.watch_matches(watch=watch)[:RECENT_MATCHES]),
            "match_count": watch_services.watch_matches(watch=watch).count(),
            "errors": list(bulk_selectors.bulkjob_errors(job=job)[:RECENT_ERRORS]) if job is not None else [],
        })
    return {"form": form, "rows": rows, "can_manage": may(request, Role.ADMIN)}


@portal_view(role=Role.ADMIN, methods=["POST"])
def watch_toggle(request: PortalRequest, pk: int) -> HttpResponse:
    watch = found(watch_services.watch_get(organisation=request.organisation, watch_id=pk))
    watch = watch_services.watch_update(watch=watch, enabled=not watch.enabled)
    messages.success(request, f"Watch of {watch.source} {'resumed' if watch.enabled else 'paused'}.")
    return HttpResponseRedirect(org_url(request, "watches"))


@portal_view(role=Role.ADMIN, methods=["POST"])
def watch_delete(request: PortalRequest, pk: int) -> HttpResponse:
    watch = found(watch_services.watch_get(organisation=request.organisation, watch_id=pk))
    source = watch.source
    watch_services.watch_delete(watch=watch)
    messages.success(request, f"No longer watching {source}. Its match reports stay on the review desk.")
    return HttpResponseRedirect(org_url(request, "watches"))
