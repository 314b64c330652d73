"""Deletion receipts (catalog/receipts.py): what they list, their signature, the API, the admin, and that an
organisation's receipt outlives it. The world is tests/catalog/test_deletion.py's: a protected picture
matched by a check (evidence drawn), thumbnailed and bulk-indexed, beside a kept one."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client

from catalog import receipts
from catalog.models import DeletionReceipt, Organisation
from tests.catalog.test_deletion import data_dirs, world  # noqa: F401 - fixtures
from tests.conftest import client_for
from tests.factories import OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PREFER = {"HTTP_PREFER": "return=representation"}


def file_hashes(names: set[str]) -> dict[str, str]:
    """SHA-256 of each stored file's bytes, read here before the deletion."""
    hashes = {}
    for name in names:
        with default_storage.open(name, "rb") as handle:
            hashes[name] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def verify_command(path: Path) -> tuple[int, str]:
    import io

    out = io.StringIO()
    try:
        call_command("verify_receipt", str(path), stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_deleting_an_image_answers_its_signed_receipt(world, tmp_path):  # type: ignore[no-untyped-def]
    image, api = world["image"], world["api"]
    expected = file_hashes(world["derived"])
    response = api.delete(f"/api/v1/images/{image.pk}/", **PREFER)
    assert response.status_code == 200 and response["Preference-Applied"] == "return=representation"
    document = response.json()
    assert response["Location"].endswith(f"/api/v1/receipts/{document['id']}/")
    body = document["receipt"]
    assert body["kind"] == "image" and body["subject"]["id"] == image.pk and body["subject"]["label"] == "c.png"
    assert body["subject"]["sha256_bytes"] == image.sha256_bytes
    assert body["organisation"] == {"id": image.organisation_id, "slug": "acme", "name": "Acme"}
    assert body["deleted_by"]["label"].startswith("API key ")
    # Rows by model: the image, its match report, and the check that matched only it.
    assert body["rows"]["catalog.ProtectedImage"] == 1 and body["rows"]["matching.Match"] == 1
    assert body["rows"]["matching.Check"] == 1 and body["totals"]["rows"] == sum(body["rows"].values())
    # Every stored file, its role, and the SHA-256 of the bytes that were written, hashed before removal.
    assert {f["name"]: f["sha256"] for f in body["files"]} == expected
    assert sorted(f["role"] for f in body["files"]) == ["check_upload", "evidence", "features", "protected_image"]
    assert all(not default_storage.exists(name) for name in expected)  # ... and removed since
    assert body["derived"]["thumbnails"] >= 1
    assert {e["name"] for e in body["derived"]["index_snapshot_files"]} >= {f"org-{image.organisation_id}/phash.npz"}
    assert body["index_entries"]["image_ids"] == [image.pk] and body["index_entries"]["phash"] == 1
    assert receipts.receipt_verify(document).valid

    # Kept without the pixels, served as signed; another organisation's key does not see it.
    stored = api.get(f"/api/v1/receipts/{document['id']}/").json()
    assert stored == document
    attached = api.get(f"/api/v1/receipts/{document['id']}/?download=true")
    assert attached["Content-Disposition"] == f'attachment; filename="deletion-receipt-{body["id"]}.json"'
    assert api.get(f"/api/v1/receipts/{document['id']}/?download=maybe").status_code == 400
    listed = api.get("/api/v1/receipts/").json()["results"]
    assert [r["id"] for r in listed] == [document["id"]] and listed[0]["kind"] == "image"
    rival = client_for(OrganisationFactory(slug="rival"))
    assert rival.get(f"/api/v1/receipts/{document['id']}/").status_code == 404
    assert rival.get("/api/v1/receipts/").json()["results"] == []

    # Tampering with any part breaks the signature: API, command line, function.
    tampered = copy.deepcopy(document)
    tampered["receipt"]["files"][0]["sha256"] = "0" * 64
    for doc, valid in ((document, True), (tampered, False)):
        answer = api.post("/api/v1/receipts/verify/", doc, format="json").json()
        assert answer["valid"] is valid, answer
        path = tmp_path / f"{valid}.json"
        path.write_text(json.dumps(doc))
        code, out = verify_command(path)
        assert (code, out.split(":")[0]) == ((0, "valid") if valid else (1, "invalid"))
    forged = copy.deepcopy(document)
    forged["signature"]["value"] = receipts.sign(forged["receipt"], secret="another deployment's secret")
    assert not receipts.receipt_verify(forged).valid
    assert api.post("/api/v1/receipts/verify/", {"receipt": "x"}, format="json").status_code == 400
    numeric = {"receipt": document["receipt"], "signature": {"algorithm": "HMAC-SHA256", "value": 0}}
    assert api.post("/api/v1/receipts/verify/", numeric, format="json").status_code == 400  # the schema's types


def test_the_signature_is_an_hmac_anyone_with_the_derived_key_can_recompute(settings):  # type: ignore[no-untyped-def]
    """docs/receipts.md verifies by hand: HMAC-SHA256, key SHA-256(salt + SECRET_KEY), sorted compact JSON."""
    import hmac

    body = {"format": receipts.RECEIPT_FORMAT, "b": [1, {"z": "é", "a": None}], "a": "x"}
    key = hashlib.sha256(("imgprotect.catalog.receipts" + settings.SECRET_KEY).encode()).digest()
    message = '{"a":"x","b":[1,{"a":null,"z":"é"}],"format":"imgprotect.deletion-receipt/1"}'.encode()
    assert receipts.sign(body) == hmac.new(key, message, hashlib.sha256).hexdigest()
    # A rotated key still verifies receipts signed before the rotation.
    document = {"receipt": body, "signature": {"algorithm": "HMAC-SHA256", "value": receipts.sign(body)}}
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a new secret key for this deployment, long enough"
    assert receipts.receipt_verify(document).valid
    settings.SECRET_KEY_FALLBACKS = []
    assert not receipts.receipt_verify(document).valid


def test_deleting_a_collection_answers_204_with_the_receipt_location(world):  # type: ignore[no-untyped-def]
    api, collection = world["api"], world["collection"]
    response = api.delete(f"/api/v1/collections/{collection.pk}/")
    assert response.status_code == 204 and not response.content  # as before receipts
    document = api.get(response["Location"]).json()
    body = document["receipt"]
    assert body["kind"] == "collection" and body["subject"]["label"] == "Logos"
    assert body["rows"]["catalog.Collection"] == 1 and body["rows"]["catalog.ProtectedImage"] == 1
    assert {f["name"] for f in body["files"]} == world["derived"]
    assert [d["name"] for d in body["derived"]["bulk_work_dirs"]] == [world["job"].work_dir.name]
    assert receipts.receipt_verify(document).valid


def test_an_organisation_deleted_in_the_admin_keeps_its_receipt(world, org):  # type: ignore[no-untyped-def]
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    bystander = UserFactory(username="other-staff")
    expected = file_hashes(world["derived"])
    admin = Client()
    admin.force_login(staff)
    response = admin.post(f"/admin/catalog/organisation/{org.pk}/delete/", {"post": "yes"})
    receipt = DeletionReceipt.objects.get(kind="organisation")
    assert response.status_code == 302 and response["Location"].endswith(f"/deletionreceipt/{receipt.pk}/change/")
    assert not Organisation.objects.filter(pk=org.pk).exists()
    body = receipt.body
    assert receipt.organisation_id == org.pk and body["organisation"]["slug"] == "acme"
    assert body["rows"]["catalog.Organisation"] == 1 and body["rows"]["catalog.Collection"] == 2
    assert body["rows"]["matching.Check"] == 2 and body["deleted_by"] == {"user_id": staff.pk, "label": "root"}
    hashes = {f["name"]: f["sha256"] for f in body["files"]}
    assert set(hashes) > set(expected) and all(hashes[name] == sha for name, sha in expected.items())
    # Staff read it in the admin (read-only) and download it; so does the deleting user, from their account.
    page = admin.get(f"/admin/catalog/deletionreceipt/{receipt.pk}/change/").content.decode()
    assert "Valid: signed with this deployment" in page
    assert admin.post(f"/admin/catalog/deletionreceipt/{receipt.pk}/change/", {}).status_code == 403
    assert admin.get(f"/admin/catalog/deletionreceipt/{receipt.pk}/delete/").status_code == 403
    download = admin.get(f"/admin/catalog/deletionreceipt/{receipt.pk}/download/")
    assert receipts.receipt_verify(json.loads(download.content)).valid
    assert "acme" in admin.get("/account/receipts/").content.decode()
    mine = admin.get(f"/account/receipts/{receipt.pk}/download/")
    assert mine["Content-Disposition"].startswith("attachment") and json.loads(mine.content)["receipt"] == body
    other = Client()
    other.force_login(bystander)
    assert other.get(f"/account/receipts/{receipt.pk}/download/").status_code == 404
    assert "acme" not in other.get("/account/receipts/").content.decode()
