"""Small helpers shared by the portal views."""
from __future__ import annotations

from typing import Any, TypeVar

from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from matching.portal.access import PortalRequest

T = TypeVar("T")


def found(obj: T | None) -> T:
    if obj is None:
        raise Http404("Not found.")
    return obj


def paginate(request: HttpRequest, items: Any, per_page: int) -> Page:
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def org_url(request: PortalRequest, name: str, *args: Any) -> str:
    return reverse(f"portal:{name}", args=[request.organisation.slug, *args])


def back(request: HttpRequest, fallback: str) -> HttpResponseRedirect:
    """Redirect to the form's ``next`` when it is a local URL, else to ``fallback``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(fallback)


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "") or \
        request.headers.get("X-Requested-With") == "XMLHttpRequest"


def page(request: HttpRequest, template: str, context: dict[str, Any] | None = None,
         status: int = 200) -> HttpResponse:
    return render(request, template, context or {}, status=status)
