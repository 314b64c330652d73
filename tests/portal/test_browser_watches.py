"""Watches in a real headless Chromium: an owner watches a drop folder through the portal and sees
each watch's state, runs and findings. The page is photographed as 60-watches.png into
test-artifacts/screenshots/ (and docs/screenshots/ with IMGPROTECT_UPDATE_SCREENSHOTS=1).

The browser and page fixtures are test_browser.py's (one Chromium per module)."""
from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from catalog.models import Membership, Organisation, Role
from matching import protection
from matching.bulk.models import BulkJob, BulkJobError, Watch, WatchKey
from matching.core.loading import load_image
from matching.models import Match
from tests.factories import CollectionFactory, UserFactory
from tests.images import photo_png
from tests.portal.test_browser import shot, browser, page  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def test_owner_creates_a_watch_and_sees_states_and_findings(page, settings):  # noqa: F811
    settings.IMGPROTECT_CNN_ENABLED = False  # nothing is matched here: the page is what is under test
    owner = UserFactory(username="rita", email="rita@acme.test")
    owner.set_password("correct horse battery")
    owner.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=owner, organisation=org, role=Role.OWNER)
    brand = CollectionFactory(organisation=org, name="Brand photos")
    root = Path(tempfile.mkdtemp(prefix="drops-"))  # a short path, as a real mount point would be
    for folder in ("partners", "shop-crawl", "agency"):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.png").write_bytes(photo_png("coffee"))
    settings.IMGPROTECT_SOURCE_ROOTS = f"acme={root}"

    # Two watches that have history: one whose daily run found copies, one whose folder disappeared.
    coffee = protection.protected_image_add(collection=brand, key="coffee.png", data=photo_png("coffee"),
                                            loaded=load_image(photo_png("coffee")), index_now=False)
    found = Watch.objects.create(organisation=org, source=str(root / "shop-crawl"), collection=brand,
                                 schedule="daily", last_run=timezone.now() - timedelta(hours=3),
                                 next_run=timezone.now() + timedelta(hours=21))
    run = BulkJob.objects.create(organisation=org, collection=brand, kind="scan", source=found.source, watch=found,
                                 status="done", total=1250, done=1247, failed=3, matched=2, match_reports=2,
                                 started=found.last_run, finished=found.last_run + timedelta(minutes=4))
    for key in ("shop/product-42.jpg", "shop/banner <b>sale</b>.jpg"):
        run.matches.add(Match.objects.create(organisation=org, protected_image=coffee, source_check=None,
                                             suspect_key=f"{found.source}/{key}", score=0.97,
                                             verdict="near_duplicate"))
    BulkJobError.objects.create(job=run, key="shop/broken.jpg", code="corrupt_image",
                                reason="The image data is truncated or corrupt.")
    Watch.objects.filter(pk=found.pk).update(last_job=run)
    WatchKey.objects.bulk_create([WatchKey(watch=found, key=f"shop/{n:04d}.jpg") for n in range(1250)])
    gone = Watch.objects.create(organisation=org, source=str(root / "agency"), schedule="hourly",
                                next_run=timezone.now() + timedelta(minutes=40))
    shutil.rmtree(root / "agency")
    Watch.objects.filter(pk=gone.pk).update(
        last_run=timezone.now() - timedelta(minutes=20),
        last_error=f"The source cannot be scanned: {root / 'agency'} is not a readable directory")

    page.goto("/login/?next=/o/acme/watches/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/watches/")
    assert page.locator("nav >> text=Watches").is_visible()

    # A source outside the organisation's roots is refused with the reason, nothing is created.
    page.fill("input[name=source]", "/etc")
    page.click("button:has-text('Watch')")
    assert "outside the source roots" in page.locator("form[data-watch-form] .errorlist").inner_text()
    assert Watch.objects.count() == 2

    page.fill("input[name=source]", str(root / "partners"))
    page.select_option("select[name=collection]", label="Brand photos")
    page.select_option("select[name=schedule]", "hourly")
    page.click("button:has-text('Watch')")
    page.wait_for_url("**/o/acme/watches/")
    assert "first run starts within a minute" in page.locator(".flashes").inner_text()
    created = Watch.objects.get(source=str(root / "partners"))
    assert (created.collection, created.schedule, created.enabled) == (brand, "hourly", True)

    assert page.locator(f"tr[data-watch='{created.pk}']").get_attribute("data-state") == "scheduled"
    assert page.locator(f"tr[data-watch='{found.pk}']").get_attribute("data-state") == "ok"
    assert page.locator(f"tr[data-watch='{gone.pk}']").get_attribute("data-state") == "failing"
    assert "is not a readable directory" in page.locator(f"tr[data-watch='{gone.pk}'] [data-reason]").inner_text()
    found_row = page.locator(f"tr[data-watch='{found.pk}']")
    assert "banner <b>sale</b>.jpg" in found_row.inner_text()  # shown as text, never as markup
    assert found_row.locator("b").count() == 0
    found_row.locator("summary").click()
    assert "shop/broken.jpg" in found_row.inner_text()
    shot(page, "60-watches")

    page.locator(f"tr[data-watch='{created.pk}'] button:has-text('Pause')").click()
    page.wait_for_url("**/o/acme/watches/")
    assert page.locator(f"tr[data-watch='{created.pk}']").get_attribute("data-state") == "paused"
    shutil.rmtree(root)
