"""A retroactive match in a real browser: a picture checked before its original was protected is
reported when the original is uploaded, marked "found retroactively" on the desk and the match page.

Reuses tests/portal/test_browser.py's Chromium and page fixtures; its screenshot goes to
test-artifacts/screenshots/ (and docs/screenshots/66-retroactive-match.png with
IMGPROTECT_UPDATE_SCREENSHOTS=1), without renumbering that module's pictures.
"""
from __future__ import annotations


import pytest
from django.core import mail

from catalog.models import Collection, Membership, Organisation, Role
from matching.core.loading import load_image
from matching.models import Match
from matching.services import check_submit
from tests.factories import UserFactory
from tests.images import encode, photo
from tests.portal.test_browser import shot, browser, file_payload, page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]



def test_a_match_found_retroactively_in_a_real_browser(page, settings):  # type: ignore[no-untyped-def]  # noqa: F811
    settings.IMGPROTECT_PARTIAL_SEARCH = "off"  # the whole-picture passes find this copy; no tile pass to wait for
    owner = UserFactory(username="rita", email="rita@acme.test")
    owner.set_password("correct horse battery")
    owner.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=owner, organisation=org, role=Role.OWNER)
    collection = Collection.objects.create(organisation=org, slug="photos", name="Photos",
                                           alert_emails="legal@acme.test")
    # Checked before the original was protected: nothing to match it then.
    cat = photo("chelsea")
    w, h = cat.size
    copy = encode(cat.crop((w // 6, h // 6, w - w // 6, h - h // 6)), "JPEG", quality=85)
    check = check_submit(organisation=org, data=copy, loaded=load_image(copy), filename="seen-on-a-blog.jpg")
    check.refresh_from_db()
    assert check.status == "done" and not Match.objects.exists()

    page.goto("/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")
    page.goto(f"/o/acme/collections/{collection.pk}/")
    page.set_input_files("[data-upload] input[type=file]",
                         files=[file_payload("cat.png", encode(photo("chelsea"), "PNG"), "image/png")])
    page.locator(".upload-item[data-name='cat.png'].is-done").wait_for()

    match = Match.objects.get(source_check=check)
    assert match.found_retroactively and match.verdict == "modified_copy" and match.evidence
    assert len(mail.outbox) == 1 and "found retroactively" in mail.outbox[0].subject
    page.goto("/o/acme/matches/")
    assert "found retroactively" in page.locator(f"tr[data-id='{match.pk}'] [data-retroactive]").inner_text()
    page.click(f"tr[data-id='{match.pk}'] a[data-open]")
    page.wait_for_url(f"**/o/acme/matches/{match.pk}/")
    note = page.locator("[data-retroactive]").inner_text()
    assert "Found retroactively" in note and "Not verified" not in note  # its upload was kept: verified
    shot(page, "66-retroactive-match")
