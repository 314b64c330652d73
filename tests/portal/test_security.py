"""Regression tests for the outside security review's portal findings (docs/security.md).

Each test is named after the finding it closes and failed before its fix.
"""
from __future__ import annotations

import re
from pathlib import Path

from django.test import Client
from django.urls import reverse

from catalog.models import Invitation, Membership, Role
from catalog.services import invitation_create
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


# --- finding 7: API keys do not outlive their creator's membership or role ------------------------------

def _key_client(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Api-Key {secret}")


def test_finding_07_api_keys_revoked_when_creator_removed(world):  # type: ignore[no-untyped-def]
    from catalog.services import api_key_create

    admin_user = world.users[Role.ADMIN]
    made = api_key_create(organisation=world.org, name="admin's script", role=Role.ADMIN, created_by=admin_user)
    other = api_key_create(organisation=world.org, name="owner's script", role=Role.ADMIN,
                           created_by=world.users[Role.OWNER])
    assert _key_client(made.secret).get("/api/v1/organisation/").status_code == 200

    membership = Membership.objects.get(organisation=world.org, user=admin_user)
    owner = world.client(Role.OWNER)
    assert owner.post(reverse("portal:settings-member-remove", args=["acme", membership.pk])).status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()

    answer = _key_client(made.secret).get("/api/v1/organisation/")
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
    assert _key_client(other.secret).get("/api/v1/organisation/").status_code == 200  # others' keys stay
    made.key.refresh_from_db()
    assert made.key.revoked is not None and "admin-user left" in made.key.revoked_reason
    listing = owner.get(reverse("portal:settings-api-keys", args=["acme"])).content.decode()
    assert "Its creator admin-user left the organisation" in listing


def test_finding_07_api_keys_revoked_when_creator_demoted(world):  # type: ignore[no-untyped-def]
    from catalog.services import api_key_create

    admin_user = world.users[Role.ADMIN]
    admin_key = api_key_create(organisation=world.org, name="admin key", role=Role.ADMIN, created_by=admin_user)
    member_key = api_key_create(organisation=world.org, name="member key", role=Role.MEMBER, created_by=admin_user)
    membership = Membership.objects.get(organisation=world.org, user=admin_user)
    owner = world.client(Role.OWNER)
    owner.post(reverse("portal:settings-member-role", args=["acme", membership.pk]), {"role": Role.MEMBER})
    assert Membership.objects.get(pk=membership.pk).role == Role.MEMBER

    assert _key_client(admin_key.secret).get("/api/v1/organisation/").status_code == 401
    assert _key_client(member_key.secret).get("/api/v1/organisation/").status_code == 200  # within the new role
    admin_key.key.refresh_from_db()
    assert admin_key.key.revoked_reason == "its creator admin-user became member"
    # Promotion revokes nothing; a later demotion to viewer takes the member key too.
    owner.post(reverse("portal:settings-member-role", args=["acme", membership.pk]), {"role": Role.ADMIN})
    assert _key_client(member_key.secret).get("/api/v1/organisation/").status_code == 200
    owner.post(reverse("portal:settings-member-role", args=["acme", membership.pk]), {"role": Role.VIEWER})
    assert _key_client(member_key.secret).get("/api/v1/organisation/").status_code == 401


def test_finding_07_api_keys_revoked_when_creator_account_deleted(world):  # type: ignore[no-untyped-def]
    from catalog.models import ApiKey
    from catalog.services import api_key_create

    made = api_key_create(organisation=world.org, name="leaver", role=Role.MEMBER, created_by=world.users[Role.MEMBER])
    world.users[Role.MEMBER].delete()  # as the admin does: the membership goes by cascade
    key = ApiKey.objects.get(pk=made.key.pk)
    assert key.revoked is not None and key.created_by is None
    assert _key_client(made.secret).get("/api/v1/organisation/").status_code == 401


# --- finding 13: a Content-Security-Policy on every portal page, which the portal satisfies ------------

ROOT = Path(__file__).resolve().parents[2]


def _policy(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def test_finding_13_csp_on_every_portal_page(world):  # type: ignore[no-untyped-def]
    owner = world.client(Role.OWNER)
    pages = [reverse(f"portal:{name}", args=["acme", *args]) for name, args in [
        ("dashboard", []), ("collections", []), ("collection", [world.collection.pk]), ("image", [world.image.pk]),
        ("checks", []), ("check", [world.check.pk]), ("desk", []), ("match", [world.match.pk]),
        ("settings-members", []), ("settings-api-keys", []), ("settings-webhooks", []), ("settings-alerts", []),
    ]]
    public = [reverse("portal:login"), reverse("portal:password-reset"), "/no-such-page/"]
    for url in pages + public:
        response = (owner if url in pages else Client()).get(url)
        assert response.status_code in (200, 404), url
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], url
        assert "'unsafe-inline'" not in response["Content-Security-Policy"], url
    # Image files keep their own, stricter sandbox policy.
    image = owner.get(reverse("portal:image-file", args=["acme", world.image.pk]))
    assert "sandbox" in image["Content-Security-Policy"] and "script-src" not in image["Content-Security-Policy"]


INLINE_CODE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<style\b", re.I), "<style> block"),
    (re.compile(r"\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]


def test_finding_13_portal_templates_and_scripts_satisfy_the_csp():
    templates = [p for p in (ROOT / "templates").rglob("*.html") if "email" not in p.parts]
    assert len(templates) > 30
    found = [f"{p.relative_to(ROOT)}: {what}" for p in templates for pattern, what in INLINE_CODE
             if pattern.search(p.read_text())]
    assert found == []
    for script in (ROOT / "static" / "portal").glob("*.js"):
        source = script.read_text()
        for forbidden in ("eval(", "new Function", "setAttribute(\"style\"", "document.write", "document.cookie"):
            assert forbidden not in source, f"{script.name} uses {forbidden}"
