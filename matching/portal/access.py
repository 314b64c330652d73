"""Who may see and do what in the portal, enforced on the server for every URL.

Organisation pages live under ``/o/<slug>/``. A user who is not a member of that
organisation gets 404 (its existence is not disclosed), whatever the method; a
member whose role is too low gets 403. Objects are always looked up within the
organisation, so another organisation's ids answer 404 too.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, cast

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from catalog.models import Membership, Organisation, Role, role_at_least
from matching.portal.services import visit_touch

ROLE_HELP = {
    Role.VIEWER: "read-only",
    Role.MEMBER: "uploads images, checks suspects, reviews matches",
    Role.ADMIN: "also manages collections, members, API keys and webhooks",
    Role.OWNER: "everything, including owners",
}
SESSION_ORG = "portal.organisation"
SESSION_SINCE = "portal.since.{}"
SESSION_TOUCHED = "portal.touched.{}"


class AccountRequest(HttpRequest):
    """The request an ``account_view`` passes on: its user is logged in (for type checking only)."""

    user: User


class PortalRequest(AccountRequest):
    """The request a ``portal_view`` passes on, with the member's organisation, membership and role."""

    organisation: Organisation
    membership: Membership
    role: str


def _allowed(methods: Sequence[str]) -> set[str]:
    allowed = {m.upper() for m in methods}
    if "GET" in allowed:
        allowed.add("HEAD")
    return allowed


def portal_view(role: str = Role.VIEWER, methods: Sequence[str] = ("GET",)) -> Callable[..., Any]:
    """Decorate a view taking ``(request, **kwargs)`` under ``/o/<org>/``.

    Sets ``request.organisation``, ``request.membership`` and ``request.role``.
    """
    allowed = _allowed(methods)

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, org: str, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = (Membership.objects.select_related("organisation")
                          .filter(user=request.user, organisation__slug=org).first())
            if membership is None:
                from django.http import Http404

                raise Http404("No such organisation.")
            if request.method not in allowed:
                return HttpResponseNotAllowed(sorted(allowed))
            if not role_at_least(membership.role, role):
                raise PermissionDenied(f"This needs the {Role(role).label.lower()} role; you are a "
                                       f"{membership.get_role_display().lower()} of {membership.organisation.name}.")
            member_request = cast(PortalRequest, request)
            member_request.organisation = membership.organisation
            member_request.membership = membership
            member_request.role = membership.role
            _note_visit(member_request, membership)
            return view(member_request, **kwargs)

        setattr(wrapped, "portal_role", role)
        setattr(wrapped, "portal_methods", tuple(sorted(allowed)))
        return wrapped

    return decorate


def account_view(methods: Sequence[str] = ("GET",)) -> Callable[..., Any]:
    """A page for any logged-in user, outside an organisation."""
    allowed = _allowed(methods)

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if request.method not in allowed:
                return HttpResponseNotAllowed(sorted(allowed))
            return view(request, **kwargs)

        setattr(wrapped, "portal_role", None)
        setattr(wrapped, "portal_methods", tuple(sorted(allowed)))
        return wrapped

    return decorate


def _note_visit(request: PortalRequest, membership: Membership) -> None:
    """Keep "since your last visit" stable for a whole session: fixed at the session's first page."""
    if request.session.get(SESSION_ORG) != membership.organisation.slug:  # unchanged: no session write
        request.session[SESSION_ORG] = membership.organisation.slug
    key = SESSION_SINCE.format(membership.organisation_id)
    touched_key = SESSION_TOUCHED.format(membership.organisation_id)
    now = time.time()
    if key not in request.session:
        previous = visit_touch(user=request.user, organisation=membership.organisation)
        request.session[key] = previous.isoformat() if previous else ""
        request.session[touched_key] = now
    elif now - request.session.get(touched_key, 0) > 60:
        # At most one write a minute, however many pages and thumbnails are fetched.
        visit_touch(user=request.user, organisation=membership.organisation)
        request.session[touched_key] = now


def may(request: HttpRequest, role: str) -> bool:
    current: str | None = getattr(request, "role", None)
    return current is not None and bool(current) and role_at_least(current, role)
