"""What every portal page needs: the organisation switcher, the caller's role, the review badge."""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest

from catalog.models import Role, role_at_least
from matching.models import Match
from matching.portal.selectors import memberships_of


def portal(request: HttpRequest) -> dict[str, Any]:
    organisation = getattr(request, "organisation", None)
    role = getattr(request, "role", None)
    context: dict[str, Any] = {"current_org": organisation, "current_role": role}
    if organisation is None or role is None:
        return context
    assert isinstance(request.user, User)  # a portal page's member is logged in

    context.update(
        my_memberships=list(memberships_of(request.user)),
        can_member=role_at_least(role, Role.MEMBER),
        can_admin=role_at_least(role, Role.ADMIN),
        can_owner=role_at_least(role, Role.OWNER),
        to_review_count=Match.objects.filter(organisation=organisation, review_status=Match.Review.NEW).count(),
    )
    return context
