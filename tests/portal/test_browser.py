"""End to end in a real headless Chromium (Debian's package) driven by Playwright.

A reviewer logs in, creates a collection, drops a logo and two photos (plus a corrupt
file and a duplicate, which are refused inline), checks a picture that a piece of one
photo was pasted into and sees the verdict in place, opens the match with the copied
region outlined where it really is, dismisses it, confirms another from the review desk
with the keyboard, and exports the evidence ZIP. The full engine runs, CNN included. Every page is
photographed into test-artifacts/screenshots/ (and into docs/screenshots/ with
IMGPROTECT_UPDATE_SCREENSHOTS=1).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
import numpy as np
from PIL import Image, ImageDraw

from catalog.models import Membership, Organisation, Role
from matching.models import Match
from matching.models import Licence, ReviewEvent
from tests.factories import UserFactory
from tests.images import encode, photo, truncated_jpeg
from tests.portal.servers import webhook_receiver
from tests.stack import wait_until

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """One Chromium for all browser tests (they live in this module; starting it is the slow part).

    Playwright's sync API keeps an event loop running in this thread while it is open, so
    Django must be told the ORM calls made here are still synchronous; the loop and the
    setting end with this module, so other tests never run beside them.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/install installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            yield browser
            browser.close()


@pytest.fixture
def page(browser, live_server, settings):  # type: ignore[no-untyped-def]
    settings.SITE_URL = live_server.url
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = True  # the test's webhook receiver listens on loopback
    settings.IMGPROTECT_CNN_ENABLED = True  # the whole engine, as in production
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Whatever the portal's Content-Security-Policy blocks is an error too (docs/security.md).
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors or CSP violations: {errors}"


class Shots:
    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.page = page
        self.n = 0
        self.docs = os.environ.get("IMGPROTECT_UPDATE_SCREENSHOTS") == "1"
        for folder in [ARTIFACTS] + ([DOCS] if self.docs else []):
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):  # numbering changes when pages are added
                if int(old.name.split("-", 1)[0]) < FEATURE_SHOTS_FROM:  # not the feature tests' own
                    old.unlink()

    def __call__(self, name: str) -> None:
        self.n += 1
        self.page.wait_for_load_state("load")
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        keep_screenshot(self.page.screenshot(full_page=True), f"{self.n:02d}-{name}")


# The feature tests (tests/portal/test_browser_*.py) number their own screenshots from here, by hand;
# Shots renumbers (and clears) only those below.
FEATURE_SHOTS_FROM = 60


def keep_screenshot(data: bytes, name: str) -> None:
    """A screenshot into the test artifacts and, with IMGPROTECT_UPDATE_SCREENSHOTS=1, into docs/screenshots as
    a lighter copy (the same picture as an optimised PNG with fewer colours)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.png").write_bytes(data)
    if os.environ.get("IMGPROTECT_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
        image.save(DOCS / f"{name}.png", optimize=True)


def shot(page, name: str, *, selector: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """One named screenshot of the page (or of the element ``selector`` picks) once it and its pictures loaded;
    for the feature tests, which keep the other tests' screenshots in place (unlike Shots)."""
    page.wait_for_load_state("load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    data = page.locator(selector).screenshot() if selector else page.screenshot(full_page=True)
    keep_screenshot(data, name)


def logo_png() -> bytes:
    img = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((30, 40, 230, 280), radius=40, fill=(36, 80, 200))
    draw.ellipse((250, 60, 450, 260), fill=(226, 75, 91))
    draw.polygon([(140, 90), (200, 230), (80, 230)], fill=(255, 200, 40))
    draw.rectangle((290, 140, 410, 180), fill="white")
    return encode(img, "PNG")


def resized_copy(data: bytes, scale: float = 0.7, quality: int = 55) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
    return encode(img, "JPEG", quality=quality)


def file_payload(name: str, data: bytes, mime: str) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


# The pasted piece: a window of scikit-image's cat (not among the CNN's training pictures, see
# docs/cnn.md), shrunk to 70 % and turned 9° clockwise, pasted into the rocket photo at (300, 40).
PASTE_WINDOW = (80, 0, 380, 300)
PASTE_SCALE, PASTE_ANGLE, PASTE_AT = 0.7, -9, (300, 40)


def pasted_copy() -> tuple[bytes, np.ndarray]:
    """The suspect JPEG and the mask of where the cat's pixels landed in it (the truth the region must find)."""
    window = photo("chelsea").crop(PASTE_WINDOW)
    size = (round(window.width * PASTE_SCALE), round(window.height * PASTE_SCALE))
    piece = window.resize(size, Image.LANCZOS).rotate(PASTE_ANGLE, resample=Image.BICUBIC, expand=True)
    shape = Image.new("L", size, 255).rotate(PASTE_ANGLE, expand=True)
    suspect = photo("rocket").copy()
    suspect.paste(piece, PASTE_AT, shape)
    truth = Image.new("L", suspect.size, 0)
    truth.paste(shape, PASTE_AT)
    return encode(suspect, "JPEG", quality=85), np.asarray(truth) > 0


def polygon_mask(points: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=255)
    return np.asarray(mask) > 0


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


def test_reviewer_flow_in_a_real_browser(page, live_server):  # type: ignore[no-untyped-def]
    shot = Shots(page)
    reviewer = UserFactory(username="rita", email="rita@acme.test")
    reviewer.set_password("correct horse battery")
    reviewer.save()
    org = Organisation.objects.create(slug="acme", name="Acme Images")
    Membership.objects.create(user=reviewer, organisation=org, role=Role.OWNER)

    # --- log in --------------------------------------------------------------------------
    page.goto("/")
    assert page.url.endswith("/login/?next=/")
    shot("login")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert page.locator(".flash-error").is_visible()
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/o/acme/")
    assert page.locator("h1").inner_text() == "Acme Images"
    shot("dashboard-empty")

    # --- create a collection -----------------------------------------------------------------
    page.click("nav >> text=Collections")
    shot("collections-empty")
    page.click("text=Create your first collection")
    page.fill("input[name=name]", "Brand logos")
    page.fill("textarea[name=description]", "Our logos and product marks")
    shot("collection-create")
    page.click("button:has-text('Create collection')")
    page.wait_for_url("**/o/acme/collections/*/")
    assert "Collection “Brand logos” created" in page.locator(".flashes").inner_text()

    # --- drop a logo and two photos, then a corrupt file and a duplicate --------------------------
    logo = logo_png()
    astronaut = encode(photo("astronaut").resize((256, 256)), "PNG")
    cat = encode(photo("chelsea"), "PNG")
    upload = "[data-upload] input[type=file]"
    page.set_input_files(upload, files=[file_payload("acme-logo.png", logo, "image/png")])
    page.locator(".upload-item[data-name='acme-logo.png'].is-done").wait_for()
    page.set_input_files(upload, files=[file_payload("astronaut.png", astronaut, "image/png")])
    page.locator(".upload-item[data-name='astronaut.png'].is-done").wait_for()
    page.set_input_files(upload, files=[file_payload("cat.png", cat, "image/png")])
    page.locator(".upload-item[data-name='cat.png'].is-done").wait_for()
    page.set_input_files(upload, files=[file_payload("broken.jpg", truncated_jpeg(), "image/jpeg"),
                                        file_payload("logo-again.png", logo, "image/png")])
    broken = page.locator(".upload-item[data-name='broken.jpg'].is-error .message")
    duplicate = page.locator(".upload-item[data-name='logo-again.png'].is-error .message")
    assert "corrupt" in broken.inner_text(), broken.inner_text()
    assert "already protected" in duplicate.inner_text(), duplicate.inner_text()
    assert page.locator("#image-grid .thumb").count() == 3
    shot("collection-upload")
    page.reload()
    assert page.locator("#image-grid .thumb").count() == 3  # the refused files left nothing behind
    assert sorted(page.locator("#image-grid .thumb").evaluate_all("els => els.map(e => e.dataset.key)")) == [
        "acme-logo.png", "astronaut.png", "cat.png"]
    shot("collection")

    # --- check a picture with a piece of the cat pasted in: the verdict appears in place -----------
    page.click("nav >> text=Check an image")
    shot("checks-empty")
    suspect, truth = pasted_copy()
    page.set_input_files("form[data-check-form] input[type=file]",
                         files=[file_payload("found-on-shop.jpg", suspect, "image/jpeg")])
    page.fill("input[name=found_at]", "https://copycat.example/shop/item-9")
    page.click("form[data-check-form] button[type=submit]")
    banner = page.locator("#check-result [data-verdict]")
    banner.wait_for()
    assert banner.get_attribute("data-verdict") == "modified_copy"
    assert "cat.png" in banner.inner_text()
    assert page.locator("#check-result [data-evidence] img").count() == 2
    shot("check-result")

    cat_match = wait_until(lambda: Match.objects.filter(protected_image__key="cat.png").first(), 60,
                            "the match report of the pasted cat")
    assert cat_match.verdict == "modified_copy"
    assert Match.objects.filter(source_check=cat_match.source_check).count() == 1  # the cat only
    # The region the engine found is where the cat was pasted, and where it was cut from.
    suspect_size = Image.open(io.BytesIO(suspect)).size
    found = polygon_mask(cat_match.region["query"], suspect_size)
    assert (found & truth).sum() >= 0.9 * truth.sum()  # it covers the pasted piece...
    assert found.sum() <= 2.5 * truth.sum()  # ...and not the whole picture around it
    cat_size = photo("chelsea").size
    window = box_mask(PASTE_WINDOW, cat_size)
    assert (polygon_mask(cat_match.region["reference"], cat_size) & window).sum() >= 0.9 * window.sum()

    # --- the match page: both images with the copied region outlined, the edit report in words ---
    page.goto(f"/o/acme/matches/{cat_match.pk}/")
    assert page.locator("svg.outline[data-region=query] polygon").count() == 1
    assert page.locator("svg.outline[data-region=reference] polygon").count() == 1
    box = page.locator("[data-evidence] .box").first.bounding_box()
    outline = page.locator("svg.outline[data-region=query]").bounding_box()
    assert abs(box["width"] - outline["width"]) < 2 and abs(box["height"] - outline["height"]) < 2
    words = page.locator("[data-edit-report]").inner_text()
    # What was done to the piece, as measured: shrunk to about 70 %, turned about 9° clockwise.
    assert re.search(r"scaled to (6[7-9]|7[0-3]) %, rotated ([89]|10)° clockwise", words, re.I), words
    scores = page.locator("[data-scores]").inner_text()
    assert "CNN similarity" in scores and "inliers" in scores, scores  # what found the piece: no hash does
    assert page.locator("[data-evidence-png]").is_visible()
    assert "copycat.example" in page.locator("text=Found at").first.inner_text()
    shot("match")
    with page.expect_popup() as popup:
        page.click("[data-evidence-png]")
    evidence_page = popup.value
    evidence_page.wait_for_load_state()
    assert evidence_page.url.endswith(f"/matches/{cat_match.pk}/evidence.png")
    evidence_page.close()
    served = page.request.get(f"/o/acme/matches/{cat_match.pk}/evidence.png")
    assert served.ok and served.headers["content-type"] == "image/png"
    evidence = Image.open(io.BytesIO(served.body()))
    assert evidence.format == "PNG" and evidence.width > evidence.height > 200  # two panels side by side

    # --- dismiss it -----------------------------------------------------------------------------
    page.fill("textarea[name=note]", "Our own reseller's shop.")
    page.locator("h1").click()  # leave the note field: shortcuts are off while typing
    page.keyboard.press("d")  # the match page's shortcut for Dismiss
    page.locator("[data-review-status=dismissed]").wait_for()
    trail = page.locator("[data-audit-trail] [data-action=dismissed]")
    assert "rita" in trail.inner_text() and "reseller" in trail.inner_text()

    # --- check a copy of the photo, then confirm it from the review desk with the keyboard ---------
    page.goto("/o/acme/checks/")
    page.set_input_files("form[data-check-form] input[type=file]",
                         files=[file_payload("space.jpg", resized_copy(astronaut, 0.6, 60), "image/jpeg")])
    page.click("form[data-check-form] button[type=submit]")
    page.locator("#check-result [data-verdict]").wait_for()
    photo_match = Match.objects.get(protected_image__key="astronaut.png")
    page.goto("/o/acme/checks/")
    shot("checks")

    page.click("nav >> text=Review desk")
    rows = page.locator("tr[data-id]")
    assert rows.count() == 1 and rows.first.get_attribute("data-id") == str(photo_match.pk)
    shot("desk")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.locator("tr.is-selected").count() == 1
    with page.expect_navigation():
        page.keyboard.press("c")
    assert "1 match confirmed as infringement" in page.locator(".flashes").inner_text()
    photo_match.refresh_from_db()
    assert photo_match.review_status == "confirmed" and photo_match.reviewed_by == reviewer

    # --- mark licensed from the desk: another copy of the logo, found on a partner's site ---------
    page.goto("/o/acme/checks/")
    page.set_input_files("form[data-check-form] input[type=file]",
                         files=[file_payload("partner.jpg", resized_copy(logo, 0.5, 85), "image/jpeg")])
    page.fill("input[name=found_at]", "https://www.partner.example/brand/")
    page.click("form[data-check-form] button[type=submit]")
    page.locator("#check-result [data-verdict]").wait_for()
    page.goto("/o/acme/matches/")
    assert page.locator("tr[data-id]").count() == 1
    page.keyboard.press("l")
    dialog = page.locator("#licence-dialog")
    assert dialog.is_visible()
    dialog.locator("button[type=submit]").click()  # no holder: refused in place
    assert dialog.locator("[data-dialog-error]").is_visible()
    page.fill("input[name=dialog_holder]", "Partner Media Ltd")
    page.fill("input[name=dialog_source]", "partner.example")
    shot("desk-licence")
    with page.expect_navigation():
        dialog.locator("button[type=submit]").click()
    assert "1 match marked licensed" in page.locator(".flashes").inner_text()
    licence = Licence.objects.get()
    assert (licence.holder, licence.source, licence.created_by) == ("Partner Media Ltd", "partner.example", reviewer)

    page.goto("/o/acme/matches/?status=")
    assert page.locator("tr[data-id]").count() == 3
    shot("desk-all")

    # --- export the evidence ----------------------------------------------------------------------
    page.goto(f"/o/acme/matches/{photo_match.pk}/")
    with page.expect_download() as download_info:
        page.click("[data-export]")
    download = download_info.value
    assert download.suggested_filename == f"imgprotect-evidence-match-{photo_match.pk}.zip"
    with zipfile.ZipFile(download.path()) as archive:
        names = {n.split("/", 1)[1]: n for n in archive.namelist()}
        assert set(names) == {"suspect.jpg", "protected.png", "report.json", "report.txt", "SHA256SUMS"} | (
            {"evidence.png"} if photo_match.evidence else set())
        for line in archive.read(names["SHA256SUMS"]).decode().splitlines():
            digest, name = line.split("  ")
            assert hashlib.sha256(archive.read(names[name])).hexdigest() == digest
        report = archive.read(names["report.txt"]).decode()
        assert "Confirmed by:   rita" in report and "astronaut.png" in report
    page.reload()
    assert page.locator("[data-audit-trail] [data-action=exported]").count() == 1
    shot("match-confirmed")
    assert ReviewEvent.objects.filter(match=photo_match, action="confirmed", actor=reviewer).exists()

    # --- the remaining pages, each photographed ------------------------------------------------------
    image = cat_match.protected_image
    page.goto(f"/o/acme/images/{image.pk}/")
    shot("image")
    page.goto(f"/o/acme/images/{image.pk}/delete/")
    shot("image-delete")
    page.goto(f"/o/acme/collections/{image.collection_id}/edit/")
    shot("collection-edit")
    page.goto(f"/o/acme/collections/{image.collection_id}/delete/")
    shot("collection-delete")
    page.goto(f"/o/acme/checks/{cat_match.source_check_id}/")
    shot("check")
    page.goto("/o/acme/")
    assert page.locator("[data-stat=to-review] .value").inner_text() == "0"
    shot("dashboard")
    page.goto("/o/acme/collections/")
    shot("collections")

    page.goto("/o/acme/settings/members/")
    page.fill("input[name=email]", "newcomer@acme.test")
    page.select_option("select#id_role", "viewer")
    page.click("button:has-text('Send invitation')")
    assert page.locator("[data-invitation='newcomer@acme.test']").is_visible()
    invite_mail = [m for m in mail.outbox if m.to == ["newcomer@acme.test"]][-1]
    shot("settings-members")

    page.goto("/o/acme/settings/api-keys/")
    page.fill("input[name=name]", "CI pipeline")
    page.click("button:has-text('Create key')")
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("ipk_")
    shot("settings-api-keys")
    page.goto("/o/acme/settings/api-keys/")
    assert page.locator("#new-secret").count() == 0 and secret not in page.content()  # shown once

    page.goto("/o/acme/settings/alerts/")
    page.fill("[data-alerts] input[type=text]", "legal@acme.test, brand@acme.test")
    page.select_option("[data-alerts] select", "daily")
    page.click("[data-alerts] button[type=submit]")
    assert "Alerts for “Brand logos” saved" in page.locator(".flashes").inner_text()
    image.collection.refresh_from_db()
    assert image.collection.alert_frequency == "daily"
    assert image.collection.alert_recipients == ["legal@acme.test", "brand@acme.test"]
    shot("settings-alerts")
    page.goto("/o/acme/settings/thresholds/")
    shot("settings-thresholds")

    with webhook_receiver() as receiver:
        page.goto("/o/acme/settings/webhooks/")
        page.fill("input[name=url]", receiver.url)
        page.fill("input[name=description]", "Legal team's ticketing system")
        page.click("button:has-text('Add webhook')")
        page.click("[data-send-test]")
        assert "Test event delivered" in page.locator(".flashes").inner_text()
        assert page.locator("[data-delivery=delivered]").count() == 1
        assert receiver.requests and receiver.requests[0].headers["X-Imgprotect-Event"] == "ping"
        shot("settings-webhook")
        page.goto("/o/acme/settings/webhooks/")
        shot("settings-webhooks")
    page.goto("/o/acme/settings/decisions/")
    assert page.locator("[data-pair]").count() == 1
    shot("settings-decisions")
    page.goto("/account/password/")
    shot("password-change")
    page.goto("/o/acme/settings/nonexistent/")
    shot("not-found")

    # --- a viewer is refused settings (403), and the pages for people who are logged out ------------
    page.click("summary[aria-label=Account]")
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/login/")
    page.goto("/password-reset/")
    shot("password-reset")
    page.fill("input[name=email]", "rita@acme.test")
    page.click("button[type=submit]")
    page.wait_for_url("**/password-reset/sent/")
    shot("password-reset-sent")
    uid = urlsafe_base64_encode(force_bytes(reviewer.pk))
    page.goto(f"/password-reset/{uid}/{default_token_generator.make_token(reviewer)}/")
    shot("password-reset-confirm")
    page.goto("/password-reset/done/")
    shot("password-reset-complete")
    invite_url = next(line for line in invite_mail.body.splitlines() if "/invite/" in line).strip()
    page.goto(invite_url.replace(live_server.url, ""))
    shot("invitation")
    page.fill("input[name=username]", "newcomer")
    page.fill("input[name=password1]", "a long new password 42")
    page.fill("input[name=password2]", "a long new password 42")
    page.click("button:has-text('Create account and join')")
    page.wait_for_url("**/o/acme/")
    page.goto("/o/acme/settings/members/")
    assert page.locator("h1").inner_text() == "Your role does not allow this"
    shot("forbidden")

    other = Organisation.objects.create(slug="globex", name="Globex")
    Membership.objects.create(user=Membership.objects.get(user__username="newcomer").user, organisation=other,
                              role=Role.MEMBER)
    page.goto("/o/acme/")
    page.click("summary[aria-label=Organisation]")
    assert page.locator(".menu-panel >> text=Globex").is_visible()
    shot("organisation-switcher")
    page.click(".menu-panel >> text=Globex")
    page.wait_for_url("**/o/globex/")
    assert page.locator("h1").inner_text() == "Globex"
