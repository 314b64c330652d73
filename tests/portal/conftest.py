"""A small world for portal tests: an organisation with one person per role, a collection with
an indexed image, a check that copies it (a real match), and a rival organisation."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from catalog import services as catalog_services
from catalog.models import Collection, Membership, Organisation, ProtectedImage, Role
from matching import protection
from matching import services as matching_services
from matching.core.loading import load_image
from matching.models import Check, Match
from tests.factories import UserFactory
from tests.images import encode, photo

PASSWORD = "pw-secret-123"


def small_png(name: str, side: int = 160) -> bytes:
    image = photo(name)
    image = image.resize((side, max(32, int(side * image.height / image.width))))
    return encode(image, "PNG")


def small_jpeg(name: str, side: int = 120, quality: int = 70) -> bytes:
    image = photo(name)
    return encode(image.resize((side, max(32, int(side * image.height / image.width)))), "JPEG", quality=quality)


def evidence_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 30, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    # PBKDF2 at production strength costs ~0.3 s a user; these tests make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    org: Organisation
    rival: Organisation
    users: dict[str, Any]
    collection: Collection
    image: ProtectedImage
    check: Check
    match: Match
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, role: str) -> Client:
        client = Client()
        client.force_login(self.users[role])
        return client


def protect(collection: Collection, key: str, data: bytes) -> ProtectedImage:
    """A protected image, stored and marked indexed without running the matching engine."""
    loaded = load_image(data)
    image = protection.protected_image_add(collection=collection, key=key, data=data, loaded=loaded,
                                                 filename=key)
    ProtectedImage.objects.filter(pk=image.pk).update(
        status=ProtectedImage.Status.INDEXED, signals={"phash": "c3a5f00f0ff00c3a"})
    image.refresh_from_db()
    return image


def record_check(org: Organisation, data: bytes, copies: list[ProtectedImage], *, name: str = "suspect.jpg",
                 user=None, verdict: str = "near_duplicate", score: float = 0.97) -> Check:  # type: ignore[no-untyped-def]
    """A finished check that found ``copies``, written as ``check_run`` writes it (the engine is tested elsewhere).

    Like check_run, it hands the fresh matches to ``review_auto_resolve`` inside the same transaction.
    """
    from django.db import transaction

    from matching.review import review_auto_resolve

    loaded = load_image(data)
    check = matching_services.check_submit(organisation=org, data=data, loaded=loaded, filename=name,
                                           submitted_by=user)
    with transaction.atomic():
        Check.objects.filter(pk=check.pk).update(status=Check.Status.DONE, result={
            "verdict": verdict if copies else "none", "match": bool(copies),
            "candidates": [{"image_id": i.pk, "key": i.key, "collection": i.collection.name, "score": score,
                            "match": True, "verdict": verdict, "signal_scores": {"phash_distance": 2}}
                           for i in copies],
            "signals": {"phash": "c3a5f00f0ff00c3b", "sha256_pixels": loaded.sha256_pixels,
                        "width": loaded.width, "height": loaded.height},
        })
        fresh = [Match.objects.create(source_check=check, organisation=org, protected_image=image, score=score,
                                      verdict=verdict, signal_scores={"sha256_bytes": False, "sha256_pixels": False,
                                                                      "phash_distance": 2})
                 for image in copies]
        review_auto_resolve(matches=fresh)
    check.refresh_from_db()
    return check


@pytest.fixture
def world(db) -> World:  # type: ignore[no-untyped-def]
    org = catalog_services.organisation_create(slug="acme", name="Acme Images")
    rival = catalog_services.organisation_create(slug="rival", name="Rival Corp")
    users = {}
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER):
        users[role] = UserFactory(username=f"{role}-user", email=f"{role}@acme.test")
        Membership.objects.create(user=users[role], organisation=org, role=role)
    users["rival"] = UserFactory(username="rival-owner", email="owner@rival.test")
    Membership.objects.create(user=users["rival"], organisation=rival, role=Role.OWNER)
    collection = catalog_services.collection_create(organisation=org, name="Logos",
                                                    alert_emails="legal@acme.test")
    image = protect(collection, "coffee.png", small_png("coffee"))
    check = record_check(org, small_jpeg("coffee"), [image], user=users[Role.MEMBER])
    match = Match.objects.get(source_check=check)
    match.evidence.save("evidence.png", ContentFile(evidence_png()), save=True)
    return World(org=org, rival=rival, users=users, collection=collection, image=image, check=check, match=match)
