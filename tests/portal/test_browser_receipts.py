"""Deleting a protected image in a real browser answers with its signed receipt (docs/receipts.md).

Reuses tests/portal/test_browser.py's Chromium and page fixtures; the receipt page is photographed as
test-artifacts/screenshots/61-deletion-receipt.png (and into docs/screenshots/ with
IMGPROTECT_UPDATE_SCREENSHOTS=1), without touching the other screenshots.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from catalog import receipts
from catalog import services as catalog_services
from catalog.models import DeletionReceipt, Membership, Organisation, Role
from matching import protection
from matching.core.loading import load_image
from matching.models import Match
from matching.services import check_submit
from tests.factories import UserFactory
from tests.portal.conftest import small_png
from tests.portal.test_browser import shot, browser, page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]



def test_deleting_an_image_in_the_browser_shows_its_receipt(page, tmp_path, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_CNN_ENABLED = False  # the engine is not under test here: hashes find the exact copy
    user = UserFactory(username="rita", email="rita@acme.test")
    user.set_password("correct horse battery")
    user.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=user, organisation=org, role=Role.OWNER)
    collection = catalog_services.collection_create(organisation=org, name="Brand logos")
    data = small_png("coffee", side=320)
    image = protection.protected_image_add(collection=collection, key="coffee.png", data=data,
                                           loaded=load_image(data), filename="coffee.png")  # indexed on commit
    check = check_submit(organisation=org, data=data, loaded=load_image(data), filename="copy.png")  # runs on commit
    assert Match.objects.get(source_check=check).evidence  # a derived file the receipt lists

    page.goto("/login/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")
    page.goto(f"/o/acme/images/{image.pk}/")
    page.click("text=Delete…")
    page.click("button:has-text('Delete')")
    page.wait_for_url("**/o/acme/receipts/*/")
    assert "“coffee.png” was deleted" in page.locator(".flashes").inner_text()
    assert page.locator("[data-verification]").inner_text().startswith("Signature: valid, signed")
    rows = page.locator("[data-receipt-file]").all_inner_texts()
    assert any("protected_image" in row and hashlib.sha256(data).hexdigest() in row for row in rows), rows
    assert any("evidence" in row for row in rows), rows
    shot(page, "61-deletion-receipt")

    with page.expect_download() as download:
        page.click("[data-receipt-download]")
    path = Path(tmp_path) / "receipt.json"
    download.value.save_as(path)
    document = json.loads(path.read_text())
    assert receipts.receipt_verify(document).valid
    assert document["receipt"]["id"] == str(DeletionReceipt.objects.get().uuid)
