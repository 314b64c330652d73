"""The members settings page's actions: what a refusal and a success look like to the admin."""
from __future__ import annotations

from django.contrib.messages import get_messages
from django.urls import reverse

from catalog.models import Membership, Role
from catalog.models import Invitation


def _url(world, name: str, *args: object) -> str:  # type: ignore[no-untyped-def]
    return reverse(f"portal:{name}", args=[world.org.slug, *args])


def _flashed(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_role_change_succeeds_and_says_so(world):  # type: ignore[no-untyped-def]
    viewer = Membership.objects.get(organisation=world.org, user=world.users[Role.VIEWER])
    response = world.client(Role.ADMIN).post(_url(world, "settings-member-role", viewer.pk), {"role": Role.MEMBER})
    assert response.status_code == 302
    viewer.refresh_from_db()
    assert viewer.role == Role.MEMBER
    assert _flashed(response) == [f"{viewer.user.get_username()} is now member."]


def test_an_admin_may_not_touch_the_owner_role(world):  # type: ignore[no-untyped-def]
    owner = Membership.objects.get(organisation=world.org, user=world.users[Role.OWNER])
    admin = world.client(Role.ADMIN)
    assert admin.post(_url(world, "settings-member-role", owner.pk), {"role": Role.MEMBER}).status_code == 403
    assert admin.post(_url(world, "settings-member-remove", owner.pk)).status_code == 403
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_the_last_owner_stays_and_the_refusal_is_shown(world):  # type: ignore[no-untyped-def]
    owner = Membership.objects.get(organisation=world.org, user=world.users[Role.OWNER])
    response = world.client(Role.OWNER).post(_url(world, "settings-member-role", owner.pk), {"role": Role.ADMIN})
    assert response.status_code == 302 and _flashed(response) == ["An organisation needs at least one owner."]
    owner.refresh_from_db()
    assert owner.role == Role.OWNER


def test_removing_yourself_leaves_the_organisation(world):  # type: ignore[no-untyped-def]
    admin = Membership.objects.get(organisation=world.org, user=world.users[Role.ADMIN])
    response = world.client(Role.ADMIN).post(_url(world, "settings-member-remove", admin.pk))
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Membership.objects.filter(pk=admin.pk).exists()


def test_invitation_is_sent_or_refused(world):  # type: ignore[no-untyped-def]
    admin = world.client(Role.ADMIN)
    response = admin.post(_url(world, "settings-invite"), {"email": "new@acme.test", "role": Role.MEMBER})
    assert _flashed(response) == ["Invitation sent to new@acme.test."]
    assert Invitation.objects.filter(organisation=world.org, email="new@acme.test").exists()
    # An admin cannot invite an owner: the service refuses with 403.
    assert admin.post(_url(world, "settings-invite"), {"email": "boss@acme.test", "role": Role.OWNER}).status_code == 403
    assert not Invitation.objects.filter(email="boss@acme.test").exists()
