"""Every portal URL, walked as anonymous, as another organisation, and as each role.

The table below states the designed access for each URL name; the first test fails
when the URLconf gains a URL the table does not cover, so no page escapes the walk.
"""
from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone

from matching.bulk.models import BulkJob, Watch
from catalog.models import DeletionReceipt, Membership, Role
from catalog.models import Invitation
from catalog.services import api_key_create, invitation_create
from matching.portal import urls as portal_urls
from matching.models import Case, DismissedPair, HashList, Licence, Webhook
from PIL import Image

V, M, A, O = Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER
ROLES = [V, M, A, O]
GET, POST, BOTH = ("GET",), ("POST",), ("GET", "POST")

# url name -> (least role, methods). None = any logged-in user; "public" = no login needed.
ACCESS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "home": (None, GET),
    "login": ("public", BOTH),
    "logout": (None, POST),
    "password-reset": ("public", BOTH),
    "password-reset-done": ("public", GET),
    "password-reset-confirm": ("public", BOTH),
    "password-reset-complete": ("public", GET),
    "password-change": (None, BOTH),
    "password-change-done": (None, GET),
    "invitation": ("public", BOTH),
    "dashboard": (V, GET),
    "collections": (V, GET),
    "collection-create": (A, BOTH),
    "collection": (V, GET),
    "collection-edit": (A, BOTH),
    "collection-delete": (A, BOTH),
    "collection-upload": (M, POST),
    "bulk-start": (A, POST),
    "collection-hashes": (V, GET),
    "bulk-progress": (V, GET),
    "watches": (V, GET),
    "watch-create": (A, POST),
    "watch-toggle": (A, POST),
    "watch-delete": (A, POST),
    "image": (V, GET),
    "image-delete": (M, BOTH),
    "image-self-test": (M, POST),
    "image-file": (V, GET),
    "image-mark": (V, GET),
    "checks": (V, GET),
    "check-create": (M, POST),
    "check": (V, GET),
    "check-file": (V, GET),
    "desk": (V, GET),
    "desk-bulk": (M, POST),
    "match": (V, GET),
    "match-review": (M, POST),
    "match-evidence": (V, GET),
    "match-export": (M, POST),
    "cases": (V, GET),
    "case": (V, GET),
    "case-update": (M, POST),
    "case-export": (M, POST),
    "settings": (A, GET),
    "settings-members": (A, GET),
    "settings-invite": (A, POST),
    "settings-member-role": (A, POST),
    "settings-member-remove": (A, POST),
    "settings-invitation-revoke": (A, POST),
    "settings-api-keys": (A, BOTH),
    "settings-api-key-revoke": (A, POST),
    "settings-alerts": (A, GET),
    "settings-alerts-save": (A, POST),
    "settings-thresholds": (A, GET),
    "settings-thresholds-save": (A, POST),
    "settings-retention": (A, BOTH),
    "settings-webhooks": (A, BOTH),
    "settings-webhook": (A, BOTH),
    "settings-webhook-test": (A, POST),
    "settings-webhook-rotate": (A, POST),
    "settings-webhook-delete": (A, POST),
    "settings-decisions": (A, GET),
    "settings-licence-revoke": (A, POST),
    "settings-pair-delete": (A, POST),
    "settings-hash-lists": (A, BOTH),
    "settings-hash-list-delete": (A, POST),
    "settings-receipts": (A, GET),
    "receipt": (M, GET),
    "receipt-download": (M, GET),
    "account-receipts": (None, GET),
    "account-receipt-download": (None, GET),
}


def _names(patterns: list[Any]) -> set[str]:
    names: set[str] = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            names |= _names(p.url_patterns)
        elif isinstance(p, URLPattern) and p.name:
            names.add(p.name)
    return names


def test_the_access_table_covers_every_portal_url():
    assert _names(portal_urls.urlpatterns) == set(ACCESS)


def _mark_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (8, 8), (200, 30, 30, 255)).save(out, "PNG")
    return out.getvalue()


_MARK_PNG = _mark_png()


def _objects(world) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The pk each URL name takes, all belonging to ``world.org``."""
    hook = Webhook.objects.create(organisation=world.org, url="https://hooks.example.com/x")
    key = api_key_create(organisation=world.org, name="ci").key
    viewer = Membership.objects.get(organisation=world.org, user=world.users[V])
    invite = invitation_create(organisation=world.org, email="new@acme.test", role=V, invited_by=world.users[O],
                               actor_role=O).invitation
    licence = Licence.objects.create(organisation=world.org, protected_image=world.image, holder="Partner")
    pair = DismissedPair.objects.create(organisation=world.org, protected_image=world.image, suspect_sha256="ab" * 32)
    # The image's extracted mark (matching/core/marks.py), so that its URL answers as a logo's would.
    world.image.mark.save("mark.png", ContentFile(_MARK_PNG), save=True)
    pk = {
        "collection": world.collection.pk, "image": world.image.pk, "check": world.check.pk, "match": world.match.pk,
        "settings-member": viewer.pk, "settings-invitation": invite.pk, "settings-api-key": key.pk,
        "settings-alerts": world.collection.pk, "settings-thresholds": world.collection.pk,
        "settings-webhook": hook.pk, "settings-licence": licence.pk, "settings-pair": pair.pk,
        "bulk-start": world.collection.pk,
        "settings-hash-list": HashList.objects.create(organisation=world.org, name="partner").pk,
        "case": Case.objects.create(organisation=world.org, kind="site", source="copycat.example").pk,
        "receipt": DeletionReceipt.objects.create(
            uuid=uuid.uuid4(), kind="image", organisation_id=world.org.pk, organisation_slug=world.org.slug,
            organisation_name=world.org.name, subject_id=999, subject_label="gone.png", created=timezone.now(),
            body={"totals": {}}, signature="0" * 64, key_id="0" * 16).pk,
        "bulk-progress": BulkJob.objects.create(organisation=world.org, collection=world.collection, kind="index",
                                                source="/nonexistent/imgprotect-test").pk,
        "watch": Watch.objects.create(organisation=world.org, source="/nonexistent/imgprotect-watch").pk,
    }
    return pk


def _pk_for(name: str, pks: dict[str, Any]) -> int | None:
    for prefix, value in sorted(pks.items(), key=lambda kv: -len(kv[0])):
        if name == prefix or name.startswith(prefix + "-"):
            return value
    return None


def _url(name: str, org: str, pk: int | None) -> str:
    args = [org] + ([pk] if pk is not None else [])
    return reverse(f"portal:{name}", args=args)


ORG_NAMES = sorted(n for n, (role, _) in ACCESS.items() if role in ROLES)


@pytest.mark.parametrize("name", ORG_NAMES)
def test_organisation_url(world, name):  # type: ignore[no-untyped-def]
    least, methods = ACCESS[name]
    pks = _objects(world)
    needs_pk = "<int:pk>" in str(next(p for p in portal_urls.org_patterns if p.name == name).pattern)
    pk = _pk_for(name, pks) if needs_pk else None
    assert pk is not None or not needs_pk, f"no object for {name}"
    url = _url(name, world.org.slug, pk)

    for method in methods:
        call = getattr(Client(), method.lower())
        # anonymous: to the login page, which brings them back
        response = call(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), (method, url)
        # a member of another organisation: the organisation does not exist for them
        rival = world.client("rival")
        assert getattr(rival, method.lower())(url).status_code == 404, (method, url)
        # ... nor do this organisation's objects under their own organisation's URL
        if pk is not None:
            assert getattr(rival, method.lower())(_url(name, world.rival.slug, pk)).status_code == 404, (method, url)

    for method in methods:
        for role in ROLES:
            if ROLES.index(role) >= ROLES.index(least):
                continue
            response = getattr(world.client(role), method.lower())(url)
            assert response.status_code == 403, (role, method, url, response.status_code)
    if "GET" in methods:
        for role in ROLES[ROLES.index(least):]:
            response = world.client(role).get(url)
            assert response.status_code in (200, 302), (role, url, response.status_code)
            if response.status_code == 302:
                assert response["Location"].startswith(f"/o/{world.org.slug}/"), (role, url)
    if methods == POST:
        assert world.client(least).get(url).status_code == 405
        # allowed: not refused (an empty POST may be invalid input, never a 403/404/500)
        response = world.client(least).post(url)
        assert response.status_code in (200, 201, 302, 400), (least, url, response.status_code)


def test_unknown_ids_answer_404(world):  # type: ignore[no-untyped-def]
    owner = world.client(O)
    for name in ("collection", "image", "image-file", "check", "check-file", "match", "match-evidence",
                 "settings-webhook"):
        assert owner.get(_url(name, world.org.slug, 999999)).status_code == 404, name
    assert owner.get("/o/no-such-org/").status_code == 404


@pytest.mark.parametrize("name", ["home", "password-change", "password-change-done", "account-receipts"])
def test_account_pages_need_a_login(world, name):  # type: ignore[no-untyped-def]
    url = reverse(f"portal:{name}")
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert world.client(V).get(url).status_code in (200, 302)


@pytest.mark.parametrize("name", ["login", "password-reset", "password-reset-done", "password-reset-complete"])
def test_public_pages_render_for_anyone(db, name):  # type: ignore[no-untyped-def]
    assert Client().get(reverse(f"portal:{name}")).status_code == 200


def test_logout_is_post_only(world):  # type: ignore[no-untyped-def]
    client = world.client(V)
    assert client.get(reverse("portal:logout")).status_code == 405
    assert client.post(reverse("portal:logout")).status_code == 302
    assert client.get(reverse("portal:dashboard", args=[world.org.slug])).status_code == 302


def test_every_form_needs_a_csrf_token(world):  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users[O])
    for name in ("collection-create", "match-review", "desk-bulk", "settings-webhooks", "settings-api-keys"):
        pk = world.match.pk if name == "match-review" else None
        response = client.post(_url(name, world.org.slug, pk), {"name": "x", "decision": "confirm"})
        assert response.status_code == 403 and b"CSRF" in response.content, name
    page = client.get(_url("collection-create", world.org.slug, None))
    assert b"csrfmiddlewaretoken" in page.content
    world.match.refresh_from_db()
    assert world.match.review_status == "new"  # the refused review changed nothing


def test_invitation_link_is_public_but_secret(world):  # type: ignore[no-untyped-def]
    issued = invitation_create(organisation=world.org, email="guest@acme.test", role=M,
                               invited_by=world.users[O], actor_role=O)
    assert Client().get(reverse("portal:invitation", args=[issued.token])).status_code == 200
    assert Client().get(reverse("portal:invitation", args=["not-a-token"])).status_code == 404
    assert Invitation.objects.get(pk=issued.invitation.pk).accepted is None  # looking does not accept


@pytest.mark.parametrize("role", ROLES)
def test_finding_03_only_admins_and_owners_may_start_a_bulk_import(world, settings, tmp_path, role):
    """The portal grants what POST /api/v1/bulk-jobs/ grants: admins and owners start bulk
    imports; a member or viewer gets 403 and no job is created."""
    root = tmp_path / "images"
    root.mkdir()
    settings.IMGPROTECT_SOURCE_ROOTS = f"{world.org.slug}={root}"
    url = reverse("portal:bulk-start", args=[world.org.slug, world.collection.pk])
    response = world.client(role).post(url, {"source": str(root)})
    if role in (V, M):
        assert response.status_code == 403
        assert not BulkJob.objects.exists()
        page = world.client(role).get(reverse("portal:collection", args=[world.org.slug, world.collection.pk]))
        assert b"Start a bulk import" not in page.content
    else:
        assert response.status_code == 302
        assert BulkJob.objects.get().source == str(root)
