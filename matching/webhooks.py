"""Signed webhook deliveries: JSON POSTs of match events to an organisation's endpoints.

Each request carries (see docs/webhooks.md)::

    X-Imgprotect-Event: match.created | match.reviewed | scan.matches | ping
    X-Imgprotect-Delivery: <uuid, the same on every retry of one delivery>
    X-Imgprotect-Timestamp: <unix seconds of this attempt>
    X-Imgprotect-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

Endpoints must be http(s) and, unless IMGPROTECT_WEBHOOK_ALLOW_PRIVATE is on,
every address the host resolves to must be public: private, loopback,
link-local, multicast and reserved ranges are refused, so the service cannot be
turned against its own network. The check runs when a webhook is saved and
again at every attempt, and the connection goes to the very address that was
checked (no second DNS lookup for a rebinding attack to exploit). Redirects are
not followed.

A failed attempt (a network error or any non-2xx answer) is retried with
exponential backoff (IMGPROTECT_WEBHOOK_RETRY_BASE_SECONDS doubling) up to
IMGPROTECT_WEBHOOK_MAX_ATTEMPTS; a beat task picks due retries, so retries
survive worker restarts.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from catalog.models import Organisation
from catalog.services import names_validate
from imgprotect.dispatch import enqueue_on_commit
from matching.models import Match, ReviewEvent, Webhook, WebhookDelivery, new_webhook_secret

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Imgprotect-Event"
DELIVERY_HEADER = "X-Imgprotect-Delivery"
TIMESTAMP_HEADER = "X-Imgprotect-Timestamp"
SIGNATURE_HEADER = "X-Imgprotect-Signature"
USER_AGENT = "imgprotect-webhooks/1"
RESPONSE_EXCERPT_CHARS = 1000


class UnsafeWebhookURL(ValidationError):
    """The URL is not http(s), cannot be resolved, or reaches a refused address."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052; its local-use
# 64:ff9b:1::/48, RFC 8215, is refused outright) and the deprecated IPv4-compatible ::a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address a transition mechanism would reach through ``ip``: 6to4 (2002::/16),
    Teredo (2001::/32, server and client), NAT64 and IPv4-compatible addresses."""
    found = [v4 for v4 in (ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _refused_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def _refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _refused_ip(ip)
    if ip.ipv4_mapped is not None:
        return _refused_ip(ip.ipv4_mapped)
    # Python counts site-local fec0::/10 (deprecated, still routed as private by some stacks) and
    # 6to4/NAT64 prefixes as global: look inside them too (docs/webhooks.md).
    if _refused_ip(ip) or ip.is_site_local or ip in _NAT64_LOCAL:
        return True
    return any(_refused_ip(v4) for v4 in _embedded_ipv4(ip))


def webhook_target(url: str, *, allow_private: bool | None = None) -> Target:
    """Parse, resolve and vet a webhook URL; raises ``UnsafeWebhookURL`` with a sentence for people."""
    if allow_private is None:
        allow_private = settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookURL("The URL must start with http:// or https://.")
    if not parts.hostname:
        raise UnsafeWebhookURL("The URL has no host name.")
    if parts.username or parts.password:
        raise UnsafeWebhookURL("The URL must not contain a user name or password.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeWebhookURL("The URL's port is not a number between 0 and 65535.") from None
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeWebhookURL(f"The host {host!r} cannot be resolved.") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeWebhookURL(f"The host {host!r} cannot be resolved.")
    if not allow_private:
        for address in addresses:
            if _refused(address):
                raise UnsafeWebhookURL(
                    f"{host} resolves to {address}, a private, loopback or link-local address; "
                    "webhooks must reach the public internet."
                )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, addresses)


def webhook_url_validate(url: str) -> None:
    webhook_target(url)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


# --- webhook settings ---------------------------------------------------------------

@transaction.atomic
def webhook_create(*, organisation: Organisation, url: str, description: str = "", active: bool = True,
                   created_by: User | None = None) -> Webhook:
    names_validate(description=description)
    webhook_url_validate(url)
    return Webhook.objects.create(organisation=organisation, url=url.strip(), description=description.strip(),
                                  active=active, created_by=created_by)


@transaction.atomic
def webhook_update(*, webhook: Webhook, url: str, description: str, active: bool) -> Webhook:
    names_validate(description=description)
    if url.strip() != webhook.url:
        webhook_url_validate(url)
    webhook.url, webhook.description, webhook.active = url.strip(), description.strip(), active
    webhook.save(update_fields=["url", "description", "active"])
    return webhook


def webhook_rotate_secret(*, webhook: Webhook) -> Webhook:
    webhook.secret = new_webhook_secret()
    webhook.save(update_fields=["secret"])
    return webhook


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()


# --- connections pinned to the vetted address ----------------------------------

class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    last_error: OSError | None = None
    for address in target.addresses:
        cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = cls(target.host, target.port, address, timeout)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            response = conn.getresponse()
            excerpt = response.read(RESPONSE_EXCERPT_CHARS * 4).decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS]
            return response.status, excerpt
        except ConnectionRefusedError as exc:  # try the host's next address
            last_error = exc
        finally:
            conn.close()
    assert last_error is not None
    raise last_error


# --- payloads and enqueueing ---------------------------------------------------------

def _portal_url(name: str, *args: object) -> str:
    return settings.SITE_URL + reverse(name, args=args)


def match_data(match: Match) -> dict[str, Any]:
    image = match.protected_image
    entry = match.hash_list_entry
    check = match.source_check
    org_slug = match.organisation.slug
    return {
        "id": match.pk,
        "url": _portal_url("portal:match", org_slug, match.pk),
        "api_url": f"{settings.SITE_URL}/api/v1/matches/{match.pk}/",
        "verdict": match.verdict,
        "score": round(match.score, 6),
        "signal_scores": match.signal_scores,
        "review_status": match.review_status,
        # A hash-list match (verdict hash_list) has no protected image: hash_list says what it hit.
        "collection": {"id": image.collection_id, "slug": image.collection.slug, "name": image.collection.name}
        if image else None,
        "protected_image": {"id": image.pk, "key": image.key, "sha256": image.sha256_bytes} if image else None,
        "hash_list": {"id": entry.hash_list_id, "name": entry.hash_list.name, "entry_id": entry.pk,
                      "pdq": entry.pdq, "label": entry.label} if entry else None,
        "suspect": {
            "check_id": check.pk if check else None,
            "name": check.original_name if check else "",
            "key": match.suspect_key,
            "sha256": check.sha256_bytes if check else "",
        },
        "edit_report": match.edit_report,
        "found_retroactively": match.found_retroactively,  # the image was protected after the suspect was seen
        "created": match.created.isoformat(),
        "reviewed": match.reviewed.isoformat() if match.reviewed else None,
    }


def _envelope(event: str, organisation: Any, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": event, "created": timezone.now().isoformat(),
            "organisation": {"slug": organisation.slug, "name": organisation.name}, "data": data}


def _enqueue(organisation_id: int, items: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
    """Create one delivery per active webhook and item (event, event_key, payload); send after commit."""
    created: list[int] = []
    hooks = list(Webhook.objects.filter(organisation_id=organisation_id, active=True))
    for hook in hooks:
        for event, key, payload in items:
            delivery, new = WebhookDelivery.objects.get_or_create(
                webhook=hook, event_key=key, defaults={"event": event, "payload": payload}
            )
            if new:
                created.append(delivery.pk)
    for delivery_id in created:
        enqueue_on_commit("workers.portal.deliver_webhook", delivery_id)
    return created


def webhook_matches_created(*, match_ids: list[int]) -> int:
    """Queue ``match.created`` for new (not auto-resolved) matches. Idempotent per webhook and match."""
    matches = list(
        Match.objects.filter(pk__in=match_ids, review_status=Match.Review.NEW)
        .select_related("organisation", "protected_image__collection", "source_check",
                        "hash_list_entry__hash_list")
    )
    by_org: dict[int, list[Match]] = {}
    for m in matches:
        by_org.setdefault(m.organisation_id, []).append(m)
    count = 0
    for org_id, group in by_org.items():
        if not Webhook.objects.filter(organisation_id=org_id, active=True).exists():
            continue
        org = group[0].organisation
        count += len(_enqueue(org_id, [
            ("match.created", f"match.created:{m.pk}", _envelope("match.created", org, {"match": match_data(m)}))
            for m in group
        ]))
    return count


SCAN_SUMMARY_LIMIT = 100  # matches listed in one scan.matches event; ``count`` says how many there are


def webhook_scan_summary(*, scan: dict[str, Any], match_ids: list[int]) -> int:
    """Queue one ``scan.matches`` event per collection for a scan's new matches (not one per match).

    ``scan`` is ``{"id", "source", "watch"}``. Idempotent per webhook, scan and collection.
    """
    matches = list(
        Match.objects.filter(pk__in=match_ids, review_status=Match.Review.NEW)
        .select_related("organisation", "protected_image__collection", "source_check", "hash_list_entry__hash_list")
        .order_by("-score", "-id")
    )
    if not matches or not Webhook.objects.filter(organisation_id=matches[0].organisation_id, active=True).exists():
        return 0
    org = matches[0].organisation
    # One event per collection, and per hash list for hash-list matches (they have no protected image).
    groups: dict[tuple[str, int], list[Match]] = {}
    for m in matches:
        if m.protected_image is not None:
            groups.setdefault(("collection", m.protected_image.collection_id), []).append(m)
        else:
            assert m.hash_list_entry is not None  # a match names one or the other (a database constraint)
            groups.setdefault(("hash_list", m.hash_list_entry.hash_list_id), []).append(m)
    items = []
    for (kind, target_id), group in groups.items():
        data: dict[str, Any] = {"scan": scan, "collection": None, "count": len(group),
                                "matches": [match_data(m) for m in group[:SCAN_SUMMARY_LIMIT]]}
        if kind == "collection":
            collection = group[0].protected_image.collection  # type: ignore[union-attr]
            data["collection"] = {"id": target_id, "slug": collection.slug, "name": collection.name}
            data["desk_url"] = _portal_url("portal:desk", org.slug) + f"?status=new&collection={target_id}"
        else:
            hash_list = group[0].hash_list_entry.hash_list  # type: ignore[union-attr]
            data["hash_list"] = {"id": target_id, "name": hash_list.name}
            data["desk_url"] = _portal_url("portal:desk", org.slug) + "?status=new"
        key = f"scan.matches:{scan['id']}:{target_id}" if kind == "collection" else \
            f"scan.matches:{scan['id']}:hash_list:{target_id}"
        items.append(("scan.matches", key, _envelope("scan.matches", org, data)))
    return len(_enqueue(org.pk, items))


def webhook_matches_reviewed(*, events: list[ReviewEvent]) -> int:
    if not events:
        return 0
    org_id = events[0].organisation_id
    if not Webhook.objects.filter(organisation_id=org_id, active=True).exists():
        return 0
    items = []
    for event in events:
        match = Match.objects.select_related("organisation", "protected_image__collection", "source_check",
                        "hash_list_entry__hash_list").get(
            pk=event.match_id)
        items.append(("match.reviewed", f"match.reviewed:{event.pk}", _envelope("match.reviewed", match.organisation, {
            "match": match_data(match),
            "review": {"action": event.action, "from": event.from_status, "to": event.to_status,
                       "by": event.actor.get_username() if event.actor else None, "note": event.note,
                       "at": event.created.isoformat()},
        })))
    return len(_enqueue(org_id, items))


def webhook_send_test(*, webhook: Webhook) -> WebhookDelivery:
    """Queue a ``ping`` event to one webhook (the settings page's "send test event")."""
    key = f"ping:{uuid.uuid4().hex}"
    payload = _envelope("ping", webhook.organisation, {"message": "Test event from imgprotect.",
                                                       "webhook": {"id": webhook.pk, "url": webhook.url}})
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="ping", event_key=key, payload=payload)
    enqueue_on_commit("workers.portal.deliver_webhook", delivery.pk)
    return delivery


# --- delivery -----------------------------------------------------------------------

def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=settings.IMGPROTECT_WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Make one attempt at a pending delivery that is due. Idempotent: a claimed or finished one is left alone."""
    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(
        Q(next_retry__isnull=True) | Q(next_retry__lte=now), pk=delivery_id, status=WebhookDelivery.Status.PENDING,
    ).update(status=WebhookDelivery.Status.SENDING, attempts=F("attempts") + 1, last_attempt=now)
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if not claimed or delivery is None:
        return delivery
    hook = delivery.webhook
    if not hook.active:
        return _finish(delivery, ok=False, code=None, excerpt="", error="The webhook is disabled.", final=True)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.uuid),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(hook.secret, timestamp, body),
    }
    started = time.perf_counter()
    try:
        target = webhook_target(hook.url)
    except UnsafeWebhookURL as exc:
        # Re-checked at delivery: the host may resolve elsewhere now, or the setting changed.
        return _finish(delivery, ok=False, code=None, excerpt="", error=f"Refused: {exc.message}", final=False)
    try:
        code, excerpt = _post(target, body, headers, settings.IMGPROTECT_WEBHOOK_TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException) as exc:
        log.info("webhook delivery %s to %s failed: %s", delivery_id, hook.url, exc)
        return _finish(delivery, ok=False, code=None, excerpt="", error=f"{type(exc).__name__}: {exc}"[:500],
                       final=False)
    log.info("webhook delivery %s to %s: %s in %.0f ms", delivery_id, hook.url, code,
             (time.perf_counter() - started) * 1000)
    ok = 200 <= code < 300
    return _finish(delivery, ok=ok, code=code, excerpt=excerpt, error="" if ok else f"HTTP {code}", final=False)


def _finish(delivery: WebhookDelivery, *, ok: bool, code: int | None, excerpt: str, error: str,
            final: bool) -> WebhookDelivery:
    now = timezone.now()
    fields: dict[str, Any] = {"status_code": code, "response_excerpt": excerpt, "error": error}
    if ok:
        fields.update(status=WebhookDelivery.Status.DELIVERED, delivered=now, next_retry=None)
    elif final or delivery.attempts >= settings.IMGPROTECT_WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=WebhookDelivery.Status.FAILED, next_retry=None)
    else:
        fields.update(status=WebhookDelivery.Status.PENDING, next_retry=now + retry_delay(delivery.attempts))
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.SENDING).update(**fields)
    delivery.refresh_from_db()
    return delivery


def webhook_deliveries_due(*, now: datetime | None = None) -> list[int]:
    """Ids of deliveries whose retry is due; also releases attempts stuck in ``sending`` (a worker died)."""
    now = now or timezone.now()
    stuck_before = now - timedelta(seconds=settings.IMGPROTECT_WEBHOOK_TIMEOUT_SECONDS * 3 + 60)
    WebhookDelivery.objects.filter(status=WebhookDelivery.Status.SENDING, last_attempt__lt=stuck_before).update(
        status=WebhookDelivery.Status.PENDING, next_retry=now)
    return list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_retry__lte=now)
        .order_by("next_retry").values_list("id", flat=True)[:500]
    )
