"""Alert e-mails through a real SMTP server on loopback (aiosmtpd): digests carry the right matches,
in HTML and plain text, with links to the portal; dismissed pairs and licensed uses stay silent."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import AlertFrequency, Collection, Role
from matching.alerts import match_alerts_send, match_digest_send
from matching.models import Match
from matching.review import Decision, LicenceTerms, match_review
from tests.portal.conftest import protect, record_check, small_jpeg, small_png
from tests.portal.servers import smtp_server
from workers.portal import send_alert_digests


@pytest.fixture
def inbox(settings):  # type: ignore[no-untyped-def]
    with smtp_server() as inbox:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", inbox.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.SITE_URL = "https://imgprotect.example.com"
        yield inbox


def parts(message):  # type: ignore[no-untyped-def]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_daily_digest_arrives_with_the_right_matches(world, inbox):
    daily = catalog_services.collection_create(organisation=world.org, name="Product shots",
                                               alert_emails="shots@acme.test, legal@acme.test")
    daily.alert_frequency = AlertFrequency.DAILY
    daily.save()
    hourly = catalog_services.collection_create(organisation=world.org, name="Hourly",
                                                alert_emails="hourly@acme.test")
    hourly.alert_frequency = AlertFrequency.HOURLY
    hourly.save()
    chelsea, rocket, astronaut = (protect(daily, f"{n}.png", small_png(n)) for n in ("chelsea", "rocket", "astronaut"))
    horse = protect(hourly, "horse.png", small_png("horse"))

    wanted = record_check(world.org, small_jpeg("chelsea"), [chelsea, rocket], name="shop-page.jpg")
    # a pair dismissed earlier: its new match is resolved at once and never mailed
    first = record_check(world.org, small_jpeg("astronaut"), [astronaut], name="astro.jpg")
    match_review(organisation=world.org, match_ids=list(first.matches.values_list("id", flat=True)),
                 decision=Decision.DISMISS, actor=world.users[Role.MEMBER])
    again = record_check(world.org, small_jpeg("astronaut"), [astronaut], name="astro-again.jpg")
    assert again.matches.get().review_status == "dismissed"
    # an old match, outside the digest window, and another collection's match
    old = record_check(world.org, small_jpeg("rocket", 100), [rocket], name="ancient.jpg")
    Match.objects.filter(source_check=old).update(created=timezone.now() - timedelta(days=30))
    record_check(world.org, small_jpeg("horse"), [horse], name="horse.jpg")

    # checks announce themselves (immediate path): nothing is mailed for digest collections
    for check in (wanted, first, again, old):
        match_alerts_send(check_id=check.pk)
    assert inbox.messages == []

    assert send_alert_digests.apply(args=["daily"]).get() == 1
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert sorted(inbox.envelopes[0][1]) == ["legal@acme.test", "shots@acme.test"]
    assert message["Subject"] == "[imgprotect] Daily digest: 2 new matches in Product shots"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    wanted_ids = sorted(wanted.matches.values_list("id", flat=True))
    for match_id in wanted_ids:
        url = f"https://imgprotect.example.com/o/acme/matches/{match_id}/"
        assert url in text and f'href="{url}"' in html
    for key in ("chelsea.png", "rocket.png"):
        assert key in text and key in html
    assert "astronaut" not in text and "horse" not in text and "ancient" not in text
    assert "shop-page.jpg" in text

    # each match is announced once; the hourly digest has its own collection
    assert match_digest_send(frequency="daily") == 0
    assert send_alert_digests.apply(args=["hourly"]).get() == 1
    assert len(inbox.messages) == 2
    hourly_text, _ = parts(inbox.messages[1])
    assert "horse.png" in hourly_text and "chelsea" not in hourly_text
    assert inbox.envelopes[1][1] == ["hourly@acme.test"]


def test_immediate_alert_is_html_and_text_and_skips_licensed_sources(world, inbox):
    match_alerts_send(check_id=world.check.pk)
    assert len(inbox.messages) == 1
    text, html = parts(inbox.messages[0])
    link = f"https://imgprotect.example.com/o/acme/matches/{world.match.pk}/"
    assert link in text and link in html and "coffee.png" in text
    assert inbox.messages[0]["Subject"] == "[imgprotect] 1 new match in Logos"

    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.LICENSE,
                 actor=world.users[Role.MEMBER], licence=LicenceTerms(holder="Partner Ltd", source=""))
    licensed = record_check(world.org, small_jpeg("coffee", 140), [world.image], name="partner.jpg")
    assert licensed.matches.get().review_status == "licensed"
    match_alerts_send(check_id=licensed.pk)
    assert len(inbox.messages) == 1


def test_a_failed_send_releases_the_claim_for_a_retry(world, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    with pytest.raises(OSError):
        match_alerts_send(check_id=world.check.pk)
    world.match.refresh_from_db()
    assert world.match.alerted is None


def test_never_means_never(world, inbox):
    world.collection.alert_frequency = AlertFrequency.NEVER
    world.collection.save()
    match_alerts_send(check_id=world.check.pk)
    for frequency in ("hourly", "daily"):
        match_digest_send(frequency=frequency)
    assert inbox.messages == []
    with pytest.raises(ValueError):
        match_digest_send(frequency="never")


def test_beat_runs_the_digests_and_webhook_retries(settings):
    from imgprotect.celery import app

    app.loader.import_default_modules()  # what a worker does at start-up: imports the app's task modules

    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["alert-digest-hourly"]["args"] == ["hourly"]
    assert schedule["alert-digest-daily"]["args"] == ["daily"]
    names = {entry["task"] for entry in schedule.values()}
    assert {"workers.portal.send_alert_digests", "workers.portal.retry_webhook_deliveries"} <= names
    assert {n for n in names if n.startswith("workers.portal.")} <= set(app.tasks)


def test_finding_14_a_collection_name_with_a_line_break_still_gets_its_alert(world, settings):
    """A name stored before names were single-line (here set in the database directly) made every
    send fail with BadHeaderError; the subject is now made one line and the alert goes out."""
    from django.core import mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Collection.objects.filter(pk=world.collection.pk).update(name="Logos\r\nBcc: victim@example.com")
    match_alerts_send(check_id=world.check.pk)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "[imgprotect] 1 new match in Logos Bcc: victim@example.com"
    assert mail.outbox[0].bcc == []
    assert Match.objects.get(pk=world.match.pk).alerted is not None
