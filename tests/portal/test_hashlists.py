"""Hash exchange in the portal: importing and deleting hash lists, a hash-list match on every page that
shows matches (no protected image behind it), its review and evidence, and the collection's PDQ export."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Role
from matching.models import HashList, HashListEntry, Match, ReviewAction, ReviewEvent
from matching.review import Decision, match_review

ROCKET = "d1a5" * 16  # any 64-hex PDQ: the engine is tested in tests/matching/test_hashlists.py


def url(name: str, *args: object) -> str:
    return reverse(f"portal:{name}", args=["acme", *args])


def import_list(client, content: bytes, name: str = "Partner bank"):  # type: ignore[no-untyped-def]
    return client.post(url("settings-hash-lists"), {
        "name": name, "description": "From our partner", "alert_emails": "trust@acme.test",
        "file": SimpleUploadedFile("bank.csv", content)})


@pytest.fixture
def listed(world):  # type: ignore[no-untyped-def]
    """A hash-list match on the world's check, as check_run writes one."""
    response = import_list(world.client(Role.ADMIN), f"pdq,label\n{ROCKET},rocket poster\n".encode())
    assert response.status_code == 302
    entry = HashListEntry.objects.get()
    return Match.objects.create(source_check=world.check, organisation=world.org, hash_list_entry=entry, score=0.95,
                                verdict="hash_list", signal_scores={"pdq_distance": 12, "pdq_variant": "original"})


def test_import_and_delete_a_hash_list(world):
    admin = world.client(Role.ADMIN)
    page = admin.get(url("settings-hash-lists")).content.decode()
    assert "No hash lists yet" in page
    bad = import_list(admin, b"pdq,label\n" + b"a" * 64 + b",=1+1\n")
    assert bad.status_code == 400 and "formula" in bad.content.decode()
    assert not HashList.objects.exists()
    done = import_list(admin, f"{ROCKET}\n{'0f' * 32}\n".encode(), name="<b>bank</b>")
    assert done.status_code == 302
    page = admin.get(url("settings-hash-lists")).content.decode()
    assert "&lt;b&gt;bank&lt;/b&gt;" in page and "<b>bank</b>" not in page
    assert import_list(admin, f"{ROCKET}\n".encode(), name="<b>bank</b>").status_code == 400  # name taken
    hash_list = HashList.objects.get()
    assert world.client(Role.MEMBER).get(url("settings-hash-lists")).status_code == 403
    assert world.client("rival").post(reverse("portal:settings-hash-list-delete", args=["rival", hash_list.pk])) \
        .status_code == 404
    assert admin.post(url("settings-hash-list-delete", hash_list.pk)).status_code == 302
    assert not HashListEntry.objects.exists()


def test_a_hash_list_match_shows_reviews_and_exports(world, listed):
    member = world.client(Role.MEMBER)
    page = member.get(url("match", listed.pk)).content.decode()
    assert "On your hash list" in page and "Partner bank" in page and "rocket poster" in page
    assert f"PDQ {ROCKET}" in page and "12 of 256 bits" in page
    for name, args in (("desk", ()), ("dashboard", ()), ("check", (world.check.pk,))):
        response = member.get(url(name, *args))
        assert response.status_code == 200 and "rocket poster" in response.content.decode(), name

    for decision in (Decision.DISMISS, Decision.REOPEN, Decision.CONFIRM):
        match_review(organisation=world.org, match_ids=[listed.pk], decision=decision, actor=world.users[Role.MEMBER])
    listed.refresh_from_db()
    assert listed.review_status == "confirmed"
    response = member.post(url("match-export", listed.pk))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    report = json.loads(archive.read(f"match-{listed.pk}/report.json"))
    assert report["protected_image"] is None and report["hash_list"]["label"] == "rocket poster"
    assert "Hash list:      Partner bank" in archive.read(f"match-{listed.pk}/report.txt").decode()
    assert ReviewEvent.objects.filter(match=listed, action=ReviewAction.EXPORTED).exists()


def test_the_collection_page_offers_the_pdq_export(world):
    viewer = world.client(Role.VIEWER)
    page = viewer.get(url("collection", world.collection.pk)).content.decode()
    assert "Export PDQ hashes" in page and "format=te" in page
    response = viewer.get(url("collection-hashes", world.collection.pk) + "?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0] == "pdq,quality,image_id,key,collection,label"
    assert viewer.get(url("collection-hashes", world.collection.pk) + "?format=xml").status_code == 400
    assert world.client("rival").get(reverse("portal:collection-hashes", args=["rival", world.collection.pk])) \
        .status_code == 404
