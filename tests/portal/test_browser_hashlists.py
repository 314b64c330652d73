"""Hash exchange in a real headless Chromium (the browser and page of tests/portal/test_browser.py):
an admin imports a partner's PDQ list (hashed by threatexchange's own hasher) in the portal, a bad
list is refused whole, and a check of a copy answers "On a hash list" with the list's entry as its
evidence. Photographed into test-artifacts/screenshots/ (and docs/screenshots/ with
IMGPROTECT_UPDATE_SCREENSHOTS=1) as 62-hash-lists.png and 67-hash-list-check.png."""
from __future__ import annotations


import pytest
from PIL import Image
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_bytes

from catalog.models import Membership, Organisation, Role
from matching.models import HashListEntry, Match
from tests.factories import UserFactory
from tests.images import encode, photo
from tests.portal.test_browser import shot, browser, file_payload, page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def test_import_a_hash_list_and_match_a_check_in_a_real_browser(page, live_server):  # noqa: F811
    admin = UserFactory(username="hana", email="hana@acme.test")
    admin.set_password("correct horse battery")
    admin.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=admin, organisation=org, role=Role.ADMIN)
    page.goto("/login/")
    page.fill("input[name=username]", "hana")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")

    page.click("nav >> text=Settings")
    page.click(".settings-nav >> text=Hash lists")
    page.wait_for_url("**/o/acme/settings/hash-lists/")
    rocket, _ = pdq_from_bytes(encode(photo("rocket"), "PNG"))

    # a bad line refuses the whole file, with the line named
    page.fill("input[name=name]", "Partner bank")
    page.set_input_files("input[name=file]", files=[file_payload(
        "bank.csv", f"pdq,label\n{rocket},rocket poster\n{'x' * 64},bad\n".encode(), "text/csv")])
    page.click("button:has-text('Import')")
    assert "line 3" in page.locator(".flash-error").inner_text()
    assert not HashListEntry.objects.exists()

    page.fill("input[name=name]", "Partner bank")
    page.fill("input[name=description]", "PDQ hashes shared by a partner through ThreatExchange")
    page.fill("input[name=alert_emails]", "trust@acme.test")
    page.set_input_files("input[name=file]", files=[file_payload(
        "bank.csv", f"pdq,label\n{rocket},rocket poster\n{'0f' * 32},another poster\n".encode(), "text/csv")])
    page.click("button:has-text('Import')")
    page.wait_for_url("**/o/acme/settings/hash-lists/")
    assert "imported: 2 hashes" in page.locator(".flashes").inner_text()
    row = page.locator("tr[data-hash-list='Partner bank']")
    assert "2" in row.inner_text() and "trust@acme.test" in row.inner_text()
    shot(page, "62-hash-lists")

    # a check of a resized copy is on the list: verdict hash_list, the entry as evidence
    page.click("nav >> text=Check an image")
    copy = photo("rocket").resize((300, 213), Image.LANCZOS)
    page.set_input_files("form[data-check-form] input[type=file]",
                         files=[file_payload("found.jpg", encode(copy, "JPEG", quality=70), "image/jpeg")])
    page.click("form[data-check-form] button[type=submit]")
    banner = page.locator("#check-result [data-verdict]")
    banner.wait_for(timeout=120_000)
    assert banner.get_attribute("data-verdict") == "hash_list"
    assert "rocket poster" in banner.inner_text()
    assert "Partner bank" in page.locator("#check-result [data-hash-list-entry]").inner_text()
    match = Match.objects.get(verdict="hash_list")
    assert match.protected_image is None and match.hash_list_entry.label == "rocket poster"
    shot(page, "67-hash-list-check")
