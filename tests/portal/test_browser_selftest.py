"""The protection self-test and the protectability flags in a real Chromium (the fixtures of
tests/portal/test_browser.py): upload a photo, a brand mark and a thumbnail in the portal, see the
thumbnail flagged in the collection, run the self-test from the photo's and the mark's pages and
photograph each chart (docs/screenshots/64-self-test-photo.png and 65-self-test-logo.png with
IMGPROTECT_UPDATE_SCREENSHOTS=1; always into test-artifacts/screenshots/). The full engine runs."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from catalog.models import Collection, Membership, Organisation, ProtectedImage, Role
from matching import protection
from matching.core.loading import load_image
from matching.models import Check, Match, SelfTest
from tests.factories import UserFactory
from tests.images import drawn_logo, encode, photo
from tests.portal.test_browser import ARTIFACTS, browser, file_payload, page, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def test_self_test_from_the_image_page_in_a_real_browser(page, live_server):  # type: ignore[no-untyped-def]
    user = UserFactory(username="sam", email="sam@acme.test")
    user.set_password("correct horse battery")
    user.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=user, organisation=org, role=Role.MEMBER)
    collection = Collection.objects.create(organisation=org, slug="brand", name="Brand")
    for name in ("coffee", "rocket"):  # the rest of the live index
        data = encode(photo(name), "PNG")
        protection.protected_image_add(collection=collection, key=f"{name}.png", data=data, loaded=load_image(data),
                                       index_now=True)

    page.goto("/login/")
    page.fill("input[name=username]", "sam")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")

    # --- upload a photo, a mark and a thumbnail: the thumbnail is flagged at once ------------------
    page.goto(f"/o/acme/collections/{collection.pk}/")
    upload = "[data-upload] input[type=file]"
    uploads = (("astronaut.png", encode(photo("astronaut"), "PNG")), ("acme-mark.png", encode(drawn_logo(), "PNG")),
               ("thumb.png", encode(photo("chelsea").resize((96, 64)), "PNG")))
    for key, data in uploads:
        page.set_input_files(upload, files=[file_payload(key, data, "image/png")])
        page.locator(f".upload-item[data-name='{key}'].is-done").wait_for()
    assert "shorter side is under 128 px" in page.locator(".upload-item[data-name='thumb.png']").inner_text()
    page.reload()
    flagged = page.locator("#image-grid .thumb[data-key='thumb.png'] .badge.warning")
    assert flagged.inner_text() == "tiny"
    assert page.locator("#image-grid .thumb[data-key='astronaut.png'] .badge.warning").count() == 0

    # --- the photo's self-test ------------------------------------------------------------------
    results = {}
    for key, kind, name in (("astronaut.png", "photo", "64-self-test-photo"), ("acme-mark.png", "mark",
                                                                               "65-self-test-logo")):
        image = ProtectedImage.objects.get(collection=collection, key=key)
        page.goto(f"/o/acme/images/{image.pk}/")
        assert "No protection problem found" in page.locator("#self-test").inner_text()
        page.click("#run-self-test")
        page.wait_for_url(f"**/o/acme/images/{image.pk}/#self-test")
        assert "Self-test done" in page.locator(".flashes").inner_text()
        rows = page.locator("#self-test svg.selftest-chart g")
        test = SelfTest.objects.get(image=image)
        assert test.status == "done" and test.results["kind"] == kind
        assert rows.count() == len(test.results["edits"]) == (10 if kind == "mark" else 9)
        found = {row["edit"] for row in test.results["edits"] if row["found"]}
        assert {"crop_60", "mirror", "rotate_90"} <= found, test.results
        assert page.locator("#self-test svg g.st-dup, #self-test svg g.st-mod").count() == len(found)
        shot(page, name, selector="#self-test")
        results[key] = test.results
    assert Check.objects.count() == 0 and Match.objects.count() == 0
    (ARTIFACTS / "self-test-results.json").write_text(json.dumps(results, indent=1))
