"""Deletion receipts in the portal: shown after a deletion, downloadable, listed under settings; another
organisation's receipt is not there (catalog/receipts.py, matching/portal/views/receipts.py)."""
from __future__ import annotations

import hashlib
import json

from django.urls import reverse

from catalog import receipts
from catalog.models import DeletionReceipt, Role


def test_deleting_an_image_shows_its_receipt_and_offers_the_download(world, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    member = world.client(Role.MEMBER)
    stored = world.image.file.read()
    world.image.file.close()
    with django_capture_on_commit_callbacks(execute=True):
        response = member.post(reverse("portal:image-delete", args=["acme", world.image.pk]), follow=True)
    receipt = DeletionReceipt.objects.get(kind="image")
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("portal:receipt", args=["acme", receipt.pk])
    assert "“coffee.png” was deleted" in page and "valid, signed with this deployment" in page
    assert hashlib.sha256(stored).hexdigest() in page and "member-user" in page
    download = member.get(reverse("portal:receipt-download", args=["acme", receipt.pk]))
    assert download["Content-Disposition"] == f'attachment; filename="deletion-receipt-{receipt.uuid}.json"'
    document = json.loads(download.content)
    assert receipts.receipt_verify(document).valid and document["receipt"]["subject"]["label"] == "coffee.png"
    assert document["receipt"]["deleted_by"] == {"user_id": world.users[Role.MEMBER].pk, "label": "member-user"}

    # The admins' list under settings; a viewer may not open it, nor a receipt; the rival sees none of it.
    listing = world.client(Role.ADMIN).get(reverse("portal:settings-receipts", args=["acme"])).content.decode()
    assert f'data-receipt="{receipt.pk}"' in listing and "Image “coffee.png”" in listing
    assert world.client(Role.VIEWER).get(reverse("portal:receipt", args=["acme", receipt.pk])).status_code == 403
    rival = world.client("rival")
    assert rival.get(reverse("portal:receipt", args=["rival", receipt.pk])).status_code == 404
    assert rival.get(reverse("portal:receipt-download", args=["rival", receipt.pk])).status_code == 404
    assert f'data-receipt="{receipt.pk}"' not in rival.get(
        reverse("portal:settings-receipts", args=["rival"])).content.decode()


def test_deleting_a_collection_shows_its_receipt(world, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    admin = world.client(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("portal:collection-delete", args=["acme", world.collection.pk]))
    receipt = DeletionReceipt.objects.get(kind="collection")
    assert response["Location"] == reverse("portal:receipt", args=["acme", receipt.pk])
    assert receipt.body["rows"]["catalog.ProtectedImage"] == 1 and receipt.body["rows"]["matching.Match"] == 1
    assert {f["role"] for f in receipt.body["files"]} == {"protected_image", "evidence", "check_upload"}
    page = admin.get(response["Location"]).content.decode()
    assert "Collection “Logos”" in page and "catalog.ProtectedImage" in page


def test_a_receipt_escapes_what_it_shows(world, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    from tests.portal.conftest import protect, small_png

    image = protect(world.collection, "<script>alert(1)</script>.png", small_png("rocket"))
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client(Role.MEMBER).post(reverse("portal:image-delete", args=["acme", image.pk]), follow=True)
    page = response.content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page
