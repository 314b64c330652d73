"""The review desk, the match page, review decisions and the evidence export."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from catalog.files import harden
from catalog.models import Role
from imgprotect.errors import ServiceError
from matching.models import Match
from matching.portal import presentation, selectors
from matching.portal.access import PortalRequest, portal_view
from matching.portal.evidence import evidence_export
from matching.portal.forms import BulkReviewForm, DeskFilterForm, ReviewForm
from matching.portal.selectors import DeskFilters
from matching.review import Decision, LicenceTerms, match_review, source_host, suspect_of
from matching.portal.views.common import back, found, org_url, page, paginate

DESK_PER_PAGE = 50
DONE_MESSAGES = {Decision.CONFIRM: "confirmed as infringement", Decision.DISMISS: "dismissed",
                 Decision.LICENSE: "marked licensed", Decision.REOPEN: "reopened"}


def evidence_context(request: PortalRequest, match: Match) -> dict[str, Any]:
    """Everything the side-by-side evidence block shows; every part may be missing."""
    suspect_outline, reference_outline = presentation.outlines(match)
    check = match.source_check
    suspect = suspect_of(match)
    return {
        "match": match,
        "suspect_url": org_url(request, "check-file", check.pk) if check is not None and check.file else "",
        "suspect_label": (check.original_name or f"check {check.pk}") if check is not None else match.suspect_key,
        "found_at": suspect.source,
        # A hash-list match has no protected image: the list's entry is its evidence.
        "reference_url": org_url(request, "image-file", match.protected_image_id) if match.protected_image_id else "",
        "hash_list_entry": match.hash_list_entry,
        "suspect_outline": suspect_outline,
        "reference_outline": reference_outline,
        "evidence_url": org_url(request, "match-evidence", match.pk) if match.evidence else "",
        "edit_words": presentation.describe_edit_report(match.edit_report),
        "edit_facts": presentation.edit_report_facts(match.edit_report),
        "signals": presentation.signal_rows(match.signal_scores),
        "verdict_tone": presentation.VERDICT_TONE.get(match.verdict, "muted"),
        "status_tone": presentation.STATUS_TONE.get(match.review_status, "muted"),
    }


@portal_view()
def desk(request: PortalRequest) -> HttpResponse:
    data = request.GET.copy()
    if "status" not in data:
        data["status"] = "new"
    form = DeskFilterForm(data, organisation=request.organisation)
    filters = DeskFilters()
    if form.is_valid():
        c = form.cleaned_data
        filters = DeskFilters(verdict=c["verdict"], collection=c["collection"].pk if c["collection"] else None,
                              status=c["status"], date_from=c["date_from"], date_to=c["date_to"], search=c["q"])
    rows = paginate(request, selectors.desk_matches(request.organisation, filters), DESK_PER_PAGE)
    query = {k: v for k, v in request.GET.items() if k != "page" and v}
    return page(request, "portal/desk.html", {
        "form": form, "page_obj": rows, "filters": filters,
        "items": [evidence_context(request, m) for m in rows.object_list],
        "querystring": urlencode(query), "here": request.get_full_path(),
    })


@portal_view(role=Role.MEMBER, methods=["POST"])
def desk_bulk(request: PortalRequest) -> HttpResponse:
    form = BulkReviewForm(request.POST)
    fallback = org_url(request, "desk")
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, str(error))
        return back(request, fallback)
    return _review(request, form, form.cleaned_data["ids"], fallback)


def _review(request: PortalRequest, form: ReviewForm, ids: list[int], fallback: str) -> HttpResponse:
    c = form.cleaned_data
    try:
        done = match_review(organisation=request.organisation, match_ids=ids, decision=c["decision"],
                            actor=request.user, note=c["note"],
                            licence=LicenceTerms(c["holder"], c["source"]) if c["decision"] == Decision.LICENSE
                            else None)
    except ServiceError as exc:
        if exc.status == 404:
            from django.http import Http404

            raise Http404(exc.message) from None
        messages.error(request, exc.message)
        return back(request, fallback)
    noun = "match" if len(done) == 1 else "matches"
    messages.success(request, f"{len(done)} {noun} {DONE_MESSAGES[c['decision']]}.")
    return back(request, fallback)


@portal_view()
def match(request: PortalRequest, pk: int) -> HttpResponse:
    obj = found(selectors.match_of(request.organisation, pk))
    evidence = evidence_context(request, obj)
    found_at = evidence["found_at"]
    return page(request, "portal/match.html", {
        "match": obj,
        "evidence": evidence,
        "trail": selectors.audit_trail(obj),
        "review_form": ReviewForm(initial={"source": source_host(found_at) if found_at else ""}),
        "candidates": [c for c in ((obj.source_check.result or {}).get("candidates", []) if obj.source_check else [])
                       if c.get("image_id") != obj.protected_image_id][:4],
    })


@portal_view(role=Role.MEMBER, methods=["POST"])
def match_review_view(request: PortalRequest, pk: int) -> HttpResponse:
    obj = found(selectors.match_of(request.organisation, pk))
    form = ReviewForm(request.POST)
    url = org_url(request, "match", obj.pk)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, str(error))
        return HttpResponseRedirect(url)
    return _review(request, form, [obj.pk], url)


@portal_view(role=Role.MEMBER, methods=["POST"])
def match_export(request: PortalRequest, pk: int) -> HttpResponse:
    obj = found(selectors.match_of(request.organisation, pk))
    try:
        name, data = evidence_export(match=obj, actor=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(org_url(request, "match", obj.pk))
    response = harden(HttpResponse(data, content_type="application/zip"))
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    return response
