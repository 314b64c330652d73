"""A case worked in a real browser: from the review desk to the cases list, into the case of the site
three copies were found on, its status changed with a note; photographed as docs/screenshots/63-case.png.

Reuses the Chromium and page fixtures of tests/portal/test_browser.py. Its ``Shots`` clears the
screenshot folders when it starts, so this module writes its one picture itself, under the fixed
number the docs cite (run after test_browser.py, as pytest orders the files).
"""
from __future__ import annotations


import pytest

from catalog import services as catalog_services
from catalog.models import Membership, Role
from matching.core.loading import load_image
from matching.models import Case, CaseEvent, Match
from matching.portal.services import portal_check_submit
from matching.protection import protected_image_add
from tests.factories import UserFactory
from tests.portal.conftest import small_jpeg, small_png
from tests.portal.test_browser import shot, browser, page  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]



def test_a_case_is_opened_and_its_status_changed_in_a_real_browser(page, live_server, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_CNN_ENABLED = False  # resized copies: the hashes find them; cases are what is tested
    reviewer = UserFactory(username="rita", email="rita@acme.test")
    reviewer.set_password("correct horse battery")
    reviewer.save()
    org = catalog_services.organisation_create(slug="acme", name="Acme Images")
    Membership.objects.create(user=reviewer, organisation=org, role=Role.OWNER)
    collection = catalog_services.collection_create(organisation=org, name="Product shots")
    for name in ("coffee", "chelsea", "rocket"):  # indexed on commit, as the worker would
        data = small_png(name)
        protected_image_add(collection=collection, key=f"{name}.png", data=data, loaded=load_image(data),
                            filename=f"{name}.png")
    # Checked through the real path: matched on commit, and the matches join the case of their site.
    for n, (name, where) in enumerate([
            ("coffee", "https://www.copycat-shop.example/mugs/coffee-classic.jpg"),
            ("chelsea", "https://copycat-shop.example/cats/chelsea.jpg"),
            ("rocket", "https://COPYCAT-SHOP.example/blog/launch"),
            ("coffee", "https://forum.example/t/123")]):
        data = small_jpeg(name, 140 - 10 * n, 60 + n)
        portal_check_submit(organisation=org, data=data, loaded=load_image(data), filename=f"{name}-{n}.jpg",
                            collection=None, found_at=where, user=reviewer)
    case = Case.objects.get(source="copycat-shop.example")
    assert Match.objects.filter(case=case).count() == 3

    page.goto("/login/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")
    page.goto("/o/acme/matches/")
    page.click("[data-work-by-case]")
    page.wait_for_url("**/o/acme/cases/")
    rows = page.locator("[data-cases] tbody tr")
    assert rows.count() == 2 and "forum.example" in rows.first.inner_text()  # the latest match first
    page.select_option("#id_sort", "matches")
    page.click("[data-case-filters] button[type=submit]")
    page.wait_for_url("**/o/acme/cases/?*sort=matches*")
    assert "copycat-shop.example" in rows.first.inner_text()  # three matches
    page.click("text=copycat-shop.example")
    page.wait_for_url(f"**/o/acme/cases/{case.pk}/")
    assert page.locator("[data-case-matches] tbody tr").count() == 3
    assert page.locator("[data-case-status]").inner_text() == "Open"

    page.select_option("[data-case-update] select[name=status]", "notice_sent")
    page.select_option("[data-case-update] select[name=assignee]", label="rita")
    page.fill("[data-case-update] textarea[name=note]", "Takedown notice e-mailed to abuse@copycat-shop.example.")
    page.click("[data-case-update] button[type=submit]")
    page.wait_for_url(f"**/o/acme/cases/{case.pk}/")
    assert "updated: notice sent" in page.locator(".flashes").inner_text()
    assert page.locator("[data-case-status]").inner_text() == "Notice sent"
    status_event = page.locator("[data-case-history] [data-action=status]")
    assert "Open → Notice sent" in status_event.inner_text() and "abuse@copycat-shop.example" in \
        status_event.inner_text()
    shot(page, "63-case")
    case.refresh_from_db()
    assert (case.status, case.assignee) == ("notice_sent", reviewer)
    assert CaseEvent.objects.filter(case=case, action="status", actor=reviewer).count() == 1
