"""Webhooks against a real HTTP server on loopback: signed, retried with backoff, silent for dismissed pairs,
and never aimed at private addresses unless allowed."""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from catalog.models import Role
from matching.alerts import match_alerts_send
from matching.models import Match
from matching.models import Webhook, WebhookDelivery
from matching.webhooks import retry_delay, webhook_create, webhook_delivery_attempt, webhook_url_validate
from matching.review import Decision, match_review
from tests.portal.conftest import record_check, small_jpeg
from tests.portal.servers import webhook_receiver
from workers.portal import retry_webhook_deliveries

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def documented_verify():  # type: ignore[no-untyped-def]
    """The verification snippet from docs/webhooks.md, executed as published."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


@pytest.fixture
def allow_private(settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = True
    return settings


def announce(world, django_capture_on_commit_callbacks, data=None):  # type: ignore[no-untyped-def]
    """A new check of a copy, announced as the worker would after matching."""
    check = record_check(world.org, data or small_jpeg("coffee", 140, 60), [world.image], name="again.jpg")
    with django_capture_on_commit_callbacks(execute=True):
        match_alerts_send(check_id=check.pk)
    return check


def test_match_event_is_signed_and_verifies(world, allow_private, django_capture_on_commit_callbacks):
    verify = documented_verify()
    with webhook_receiver() as receiver:
        hook = webhook_create(organisation=world.org, url=receiver.url, created_by=world.users[Role.ADMIN])
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        assert len(receiver.requests) == 1
        request = receiver.requests[0]
    assert request.path == "/hooks/imgprotect"
    assert request.headers["X-Imgprotect-Event"] == "match.created"
    assert request.headers["Content-Type"] == "application/json"
    assert abs(int(request.headers["X-Imgprotect-Timestamp"]) - time.time()) < 60
    assert verify(hook.secret, request.headers, request.body) is True
    assert verify("whsec_wrong", request.headers, request.body) is False
    assert verify(hook.secret, request.headers, request.body.replace(b"near_duplicate", b"exact")) is False
    stale = {**request.headers, "X-Imgprotect-Timestamp": str(int(time.time()) - 3600)}
    assert verify(hook.secret, stale, request.body) is False
    payload = json.loads(request.body)
    assert payload["type"] == "match.created" and payload["organisation"]["slug"] == "acme"
    match = payload["data"]["match"]
    assert match["id"] == world.match.pk and match["protected_image"]["key"] == "coffee.png"
    assert match["url"].endswith(reverse("portal:match", args=["acme", world.match.pk]))
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert delivery.status == "delivered" and delivery.status_code == 200 and delivery.attempts == 1
    assert request.headers["X-Imgprotect-Delivery"] == str(delivery.uuid)
    # announcing the same check again (a redelivered task) sends nothing new
    with webhook_receiver() as receiver:
        Webhook.objects.filter(pk=hook.pk).update(url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        assert receiver.requests == []


def test_failed_delivery_is_retried_with_backoff_until_it_succeeds(world, allow_private,
                                                                   django_capture_on_commit_callbacks):
    verify = documented_verify()
    with webhook_receiver(script=[500, 503]) as receiver:
        hook = webhook_create(organisation=world.org, url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        delivery = WebhookDelivery.objects.get(webhook=hook)
        assert (delivery.status, delivery.status_code, delivery.attempts) == ("pending", 500, 1)
        assert delivery.error == "HTTP 500" and "try later" in delivery.response_excerpt
        wait = (delivery.next_retry - delivery.last_attempt).total_seconds()
        assert 29 <= wait <= 31
        # not due yet: the beat task leaves it alone
        assert retry_webhook_deliveries.apply().get() == 0
        assert len(receiver.requests) == 1
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_retry=timezone.now() - timedelta(seconds=1))
        assert retry_webhook_deliveries.apply().get() == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.status_code, delivery.attempts) == ("pending", 503, 2)
        assert 59 <= (delivery.next_retry - delivery.last_attempt).total_seconds() <= 61  # doubled
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_retry=timezone.now() - timedelta(seconds=1))
        retry_webhook_deliveries.apply().get()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.status_code, delivery.attempts) == ("delivered", 200, 3)
        assert len(receiver.requests) == 3
        # every attempt is the same delivery, signed afresh
        assert len({r.headers["X-Imgprotect-Delivery"] for r in receiver.requests}) == 1
        assert all(verify(hook.secret, r.headers, r.body) for r in receiver.requests)
        assert retry_webhook_deliveries.apply().get() == 0


def test_retries_are_bounded(world, allow_private, settings, django_capture_on_commit_callbacks):
    settings.IMGPROTECT_WEBHOOK_MAX_ATTEMPTS = 3
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    with webhook_receiver(script=[500] * 10) as receiver:
        hook = webhook_create(organisation=world.org, url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        delivery = WebhookDelivery.objects.get(webhook=hook)
        for _ in range(5):
            WebhookDelivery.objects.filter(pk=delivery.pk, next_retry__isnull=False).update(
                next_retry=timezone.now() - timedelta(seconds=1))
            retry_webhook_deliveries.apply().get()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.next_retry) == ("failed", 3, None)
        assert len(receiver.requests) == 3


def test_a_dismissed_pair_sends_nothing(world, allow_private, django_capture_on_commit_callbacks):
    with webhook_receiver() as receiver:
        webhook_create(organisation=world.org, url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.DISMISS,
                         actor=world.users[Role.MEMBER], note="our reseller")
        assert [r.headers["X-Imgprotect-Event"] for r in receiver.requests] == ["match.reviewed"]
        review = json.loads(receiver.requests[0].body)["data"]["review"]
        assert review["to"] == "dismissed" and review["by"] == "member-user"
        # the same suspect turns up again: its match is resolved at once and announced to nobody
        again = announce(world, django_capture_on_commit_callbacks, data=world.check.file.open("rb").read())
        new = Match.objects.get(source_check=again)
        assert new.review_status == "dismissed"
        assert [r.headers["X-Imgprotect-Event"] for r in receiver.requests] == ["match.reviewed"]
        # a different copy of the same image is a different pair: it is announced
        other = announce(world, django_capture_on_commit_callbacks, data=small_jpeg("coffee", 150, 50))
        assert Match.objects.get(source_check=other).review_status == "new"
        events = [json.loads(r.body) for r in receiver.requests]
        assert [e["type"] for e in events] == ["match.reviewed", "match.created"]
        assert events[1]["data"]["match"]["suspect"]["check_id"] == other.pk


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/", "http://192.168.1.10/",
    "http://172.16.0.5/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/",
    "http://0.0.0.0/", "http://100.64.0.1/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/",
    "ftp://93.184.216.34/", "javascript:alert(1)", "http://user:pw@93.184.216.34/", "http:///nohost",
    "https://93.184.216.34:99999/",
])
def test_unsafe_urls_are_refused(settings, url):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError):
        webhook_url_validate(url)


def test_public_addresses_are_accepted_and_private_ones_only_when_allowed(settings):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
    webhook_url_validate("https://93.184.216.34/hooks?x=1")  # a public literal needs no DNS
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = True
    webhook_url_validate("http://127.0.0.1:8000/hook")
    with pytest.raises(ValidationError):
        webhook_url_validate("ftp://127.0.0.1/")  # the scheme rule holds either way


def test_the_address_is_checked_again_at_delivery(world, settings, django_capture_on_commit_callbacks):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = True
    with webhook_receiver() as receiver:
        hook = webhook_create(organisation=world.org, url=receiver.url)
        settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        assert receiver.requests == []
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert delivery.status == "pending" and delivery.error.startswith("Refused:") and "127.0.0.1" in delivery.error


def test_settings_page_refuses_a_private_url(world, settings):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
    response = world.client(Role.ADMIN).post(reverse("portal:settings-webhooks", args=["acme"]),
                                             {"url": "http://169.254.169.254/latest", "description": "metadata"})
    assert response.status_code == 400
    assert "private, loopback or link-local" in response.content.decode()
    assert not Webhook.objects.exists()


@pytest.mark.django_db(transaction=True)  # as in production: the request commits, then the task runs (eagerly)
def test_send_test_event_button(allow_private):
    from django.test import Client

    from catalog.models import Membership, Organisation
    from tests.factories import UserFactory

    org = Organisation.objects.create(slug="acme", name="Acme")
    admin = UserFactory()
    Membership.objects.create(user=admin, organisation=org, role=Role.ADMIN)
    client = Client()
    client.force_login(admin)
    with webhook_receiver(script=[404]) as receiver:
        hook = webhook_create(organisation=org, url=receiver.url)
        url = reverse("portal:settings-webhook-test", args=["acme", hook.pk])
        response = client.post(url, follow=True)
        assert "Test event failed (HTTP 404)" in response.content.decode()
        response = client.post(url, follow=True)
        assert "Test event delivered: your endpoint answered 200" in response.content.decode()
        assert [r.headers["X-Imgprotect-Event"] for r in receiver.requests] == ["ping", "ping"]
    page = client.get(reverse("portal:settings-webhook", args=["acme", hook.pk])).content.decode()
    assert page.count('data-delivery="delivered"') == 1 and page.count('data-delivery="pending"') == 1


def test_disabled_webhooks_get_nothing(world, allow_private, django_capture_on_commit_callbacks):
    with webhook_receiver() as receiver:
        hook = webhook_create(organisation=world.org, url=receiver.url)
        Webhook.objects.filter(pk=hook.pk).update(active=False)
        with django_capture_on_commit_callbacks(execute=True):
            match_alerts_send(check_id=world.check.pk)
        assert receiver.requests == [] and not WebhookDelivery.objects.exists()


def test_a_stuck_attempt_is_released(world, allow_private):
    hook = Webhook.objects.create(organisation=world.org, url="http://127.0.0.1:9/")
    delivery = WebhookDelivery.objects.create(webhook=hook, event="ping", event_key="k", payload={},
                                              status="sending", attempts=1,
                                              last_attempt=timezone.now() - timedelta(hours=1))
    from matching.webhooks import webhook_deliveries_due

    assert webhook_deliveries_due() == [delivery.pk]
    assert webhook_delivery_attempt(delivery_id=delivery.pk).attempts == 2


@pytest.mark.parametrize("address", [
    "2002:7f00:1::1",            # 6to4 of 127.0.0.1
    "2002:a00:1::1",             # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::1",         # 6to4 of 169.254.169.254 (cloud metadata)
    "fec0::1",                   # site-local
    "64:ff9b::7f00:1",           # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",        # NAT64 of 169.254.169.254
    "64:ff9b:1::808:808",        # local-use NAT64
    "::ffff:10.0.0.1",           # IPv4-mapped
    "::127.0.0.1",               # IPv4-compatible
    "::a9fe:a9fe",               # IPv4-compatible of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
])
def test_finding_09_ipv6_addresses_embedding_private_ipv4_are_refused(settings, address):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError):
        webhook_url_validate(f"http://[{address}]/hook")


@pytest.mark.parametrize("address", ["2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_finding_09_ipv6_addresses_embedding_public_ipv4_are_accepted(settings, address):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = False
    webhook_url_validate(f"http://[{address}]/hook")


@pytest.mark.parametrize("active", [True, False])
def test_finding_09_the_active_box_is_honoured_when_a_webhook_is_created(world, allow_private, active):
    form = {"url": "https://93.184.216.34/hook", "description": "siem"} | ({"active": "on"} if active else {})
    response = world.client(Role.ADMIN).post(reverse("portal:settings-webhooks", args=["acme"]), form)
    assert response.status_code == 302
    assert Webhook.objects.get().active is active
    page = world.client(Role.ADMIN).get(reverse("portal:settings-webhooks", args=["acme"]))
    assert 'name="active"' in page.content.decode()
