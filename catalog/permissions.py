"""Tenant resolution and role checks for every API request.

The caller's organisation comes from the API key, or, for a logged-in user,
from their membership (``X-Organisation: <slug>`` picks one when they belong
to several). Views filter every queryset by it, so another organisation's ids
answer 404, never 403.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions, permissions

from catalog.models import ApiKey, Membership, Organisation, Role, role_at_least


@dataclass(frozen=True)
class Tenant:
    organisation: Organisation
    role: str
    api_key: ApiKey | None


def resolve_tenant(request) -> Tenant | None:
    cached = getattr(request, "_tenant", None)
    if cached is not None:
        return cached
    tenant = None
    if isinstance(request.auth, ApiKey):
        tenant = Tenant(request.auth.organisation, request.auth.role, request.auth)
    elif request.user and request.user.is_authenticated:
        memberships = Membership.objects.filter(user=request.user).select_related("organisation")
        wanted = request.headers.get("X-Organisation")
        if wanted:
            memberships = memberships.filter(organisation__slug=wanted)
        chosen = list(memberships[:2])
        if len(chosen) == 1:
            tenant = Tenant(chosen[0].organisation, chosen[0].role, None)
        elif len(chosen) > 1:
            raise exceptions.ParseError("You belong to several organisations: send X-Organisation: <slug>.")
    request._tenant = tenant
    return tenant


def request_tenant(request: Any) -> Tenant:
    """The tenant of a request that ``IsOrganisationMember`` let through (it refuses one without)."""
    tenant = resolve_tenant(request)
    assert tenant is not None
    return tenant


class IsOrganisationMember(permissions.BasePermission):
    """Any member may read; writes need the role a view names (default: member)."""

    message = "Your role does not allow this action."

    def has_permission(self, request, view) -> bool:
        if request.auth is None and not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated()
        tenant = resolve_tenant(request)
        if tenant is None:
            raise exceptions.PermissionDenied("You are not a member of any organisation.")
        if request.method in permissions.SAFE_METHODS:
            return True
        needed = getattr(view, "write_roles", {}).get(getattr(view, "action", None), Role.MEMBER)
        return role_at_least(tenant.role, needed)
