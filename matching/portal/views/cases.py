"""Cases in the portal: the list (by status, by number of matches or the latest), a case's page with
its matches and history, status changes with notes, and the case's evidence package."""
from __future__ import annotations

from typing import cast
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect

from catalog.files import harden
from catalog.models import Role
from imgprotect.errors import ServiceError
from matching import cases as case_service
from matching.models import Case
from matching.portal.access import PortalRequest, portal_view
from matching.portal.case_evidence import case_evidence_export
from matching.portal.views.common import org_url, page, paginate
from matching.portal.views.review import evidence_context

CASES_PER_PAGE = 50
CASE_MATCHES_PER_PAGE = 100
CASE_TONE: dict[str, str] = {Case.Status.OPEN: "warning", Case.Status.NOTICE_SENT: "info", Case.Status.LICENSED: "ok",
             Case.Status.RESOLVED: "muted"}


class CaseFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Case.Status.choices])
    sort = forms.ChoiceField(required=False, choices=[("latest", "Latest match first"),
                                                      ("matches", "Most matches first")])
    q = forms.CharField(required=False, max_length=200, label="Source")


class CaseUpdateForm(forms.Form):
    status = forms.ChoiceField(choices=Case.Status.choices)
    assignee = forms.ModelChoiceField(queryset=User.objects.none(), required=False, empty_label="Nobody")
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                           help_text="Why: the notice sent, the licence agreed, the answer received.")

    def __init__(self, *args, organisation, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["assignee"]).queryset = case_service.case_assignees(
            organisation=organisation)


def _case(request: PortalRequest, pk: int) -> Case:
    try:
        return case_service.case_of(organisation=request.organisation, pk=pk)
    except case_service.CaseNotFound:
        raise Http404("No such case.") from None


@portal_view()
def cases(request: PortalRequest) -> HttpResponse:
    form = CaseFilterForm(request.GET)
    status, sort, search = "", "latest", ""
    if form.is_valid():
        status, sort, search = form.cleaned_data["status"], form.cleaned_data["sort"] or "latest", \
            form.cleaned_data["q"]
    rows = paginate(request, case_service.case_list(organisation=request.organisation, status=status, sort=sort,
                                                    search=search), CASES_PER_PAGE)
    query = {k: v for k, v in request.GET.items() if k != "page" and v}
    return page(request, "portal/cases.html", {
        "form": form, "page_obj": rows, "status": status,
        "items": [(c, CASE_TONE.get(c.status, "muted")) for c in rows.object_list],
        "unsourced": case_service.unsourced_match_count(organisation=request.organisation),
        "querystring": urlencode(query),
    })


@portal_view()
def case(request: PortalRequest, pk: int) -> HttpResponse:
    obj = _case(request, pk)
    rows = paginate(request, case_service.case_matches(case=obj), CASE_MATCHES_PER_PAGE)
    return page(request, "portal/case.html", {
        "case": obj, "tone": CASE_TONE.get(obj.status, "muted"), "page_obj": rows,
        "items": [evidence_context(request, m) for m in rows.object_list],
        "history": case_service.case_history(case=obj),
        "form": CaseUpdateForm(organisation=request.organisation,
                               initial={"status": obj.status, "assignee": obj.assignee_id}),
        "licence_source": obj.source if obj.kind == Case.Kind.SITE else "",
        "here": request.get_full_path(),
    })


@portal_view(role=Role.MEMBER, methods=["POST"])
def case_update(request: PortalRequest, pk: int) -> HttpResponse:
    obj = _case(request, pk)
    url = org_url(request, "case", obj.pk)
    form = CaseUpdateForm(request.POST, organisation=request.organisation)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, str(error))
        return HttpResponseRedirect(url)
    c = form.cleaned_data
    try:
        done = case_service.case_update(case=obj, actor=request.user, status=c["status"], note=c["note"],
                                        assignee=c["assignee"], assign=True)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(url)
    messages.success(request, f"Case #{done.pk} updated: {done.get_status_display().lower()}.")
    return HttpResponseRedirect(url)


@portal_view(role=Role.MEMBER, methods=["POST"])
def case_export(request: PortalRequest, pk: int) -> FileResponse:
    obj = _case(request, pk)
    name, data = case_evidence_export(case=obj, actor=request.user)
    response = harden(FileResponse(data, content_type="application/zip", as_attachment=True, filename=name))
    response["Cache-Control"] = "private, no-store"
    return response
