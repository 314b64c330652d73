"""Regression tests for the outside security review's portal findings (docs/security.md).

Each test is named after the finding it closes and failed before its fix.
"""
from __future__ import annotations

from django.test import Client
from django.urls import reverse

from catalog.models import Membership, Role
from matching.portal.models import Invitation
from matching.portal.services import invitation_create
from tests.factories import UserFactory
from tests.portal.conftest import PASSWORD


# --- finding 6: an invitation is bound to the invited address ---------------------------------------

def test_finding_06_invitation_bound_to_invited_address(world):  # type: ignore[no-untyped-def]
    issued = invitation_create(organisation=world.org, email="Invited.Person@Example.com", role=Role.ADMIN,
                               invited_by=world.users[Role.OWNER], actor_role=Role.OWNER)
    url = reverse("portal:invitation", args=[issued.token])

    # Someone else holding the link (a forwarded or leaked e-mail) is refused, on sight and on accepting.
    stranger = Client()
    stranger.force_login(UserFactory(username="stranger", email="stranger@example.com"))
    page = stranger.get(url)
    assert page.status_code == 403
    text = page.content.decode()
    assert "This invitation is for someone else" in text and "invited.person@example.com" in text
    assert "Accept the invitation" not in text
    assert stranger.post(url).status_code == 403
    # So is an account without any address, and a member of the organisation with another address.
    nobody = Client()
    nobody.force_login(UserFactory(username="no-address", email=""))
    assert nobody.post(url).status_code == 403
    assert world.client(Role.VIEWER).post(url).status_code == 403
    assert not Membership.objects.filter(organisation=world.org, role=Role.ADMIN).exclude(
        user=world.users[Role.ADMIN]).exists()
    assert Invitation.objects.get(pk=issued.invitation.pk).accepted is None  # still open for the right person

    # The invited person (address compared without regard to case) joins with the invited role.
    invited = UserFactory(username="invited", email="invited.person@EXAMPLE.com")
    client = Client()
    client.force_login(invited)
    assert "Accept the invitation" in client.get(url).content.decode()
    assert client.post(url)["Location"] == reverse("portal:dashboard", args=["acme"])
    assert Membership.objects.get(organisation=world.org, user=invited).role == Role.ADMIN


def test_finding_06_signup_through_an_invitation_gets_the_invited_address(world):  # type: ignore[no-untyped-def]
    issued = invitation_create(organisation=world.org, email="newcomer@example.com", role=Role.MEMBER,
                               invited_by=world.users[Role.OWNER], actor_role=Role.OWNER)
    url = reverse("portal:invitation", args=[issued.token])
    visitor = Client()
    response = visitor.post(url, {"username": "newcomer", "email": "attacker@example.com",
                                  "password1": PASSWORD + "-long", "password2": PASSWORD + "-long"})
    assert response.status_code == 302
    membership = Membership.objects.get(organisation=world.org, user__username="newcomer")
    assert membership.user.email == "newcomer@example.com" and membership.role == Role.MEMBER
