"""Telling owners about new matches: immediate e-mails, hourly/daily digests, webhooks.

Each collection chooses how its recipients hear about matches
(``Collection.alert_frequency``): immediately, in an hourly or a daily digest
(Celery beat runs ``workers.portal.send_alert_digests``), or never. Webhooks
fire immediately whatever the e-mail frequency. Only matches still ``new`` are
ever announced: a match resolved by an earlier decision (a dismissed pair, a
licence) stays silent.

Matches are claimed (``alerted`` set to this run's timestamp) before sending,
so a redelivered task never sends twice; if sending fails the claim is released
for a retry.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from catalog.models import AlertFrequency, Collection
from catalog.validators import one_line
from matching.models import HashList, Match
from matching.webhooks import webhook_matches_created, webhook_scan_summary

# A digest only covers recent matches, so switching a collection from "never" to a
# digest does not mail its whole history.
DIGEST_LOOKBACK = timedelta(days=7)
# Beyond this many, an e-mail lists the best ones and links to the review desk for the rest.
EMAIL_LIST_LIMIT = 50

DIGEST_FREQUENCIES = (AlertFrequency.HOURLY, AlertFrequency.DAILY)


def match_alerts_send(*, check_id: int) -> int:
    """Announce this check's new matches. Idempotent."""
    return match_alerts_send_for(match_ids=list(Match.objects.filter(source_check_id=check_id).values_list("id", flat=True)))


def match_alerts_send_for(*, match_ids: list[int], scan: dict[str, Any] | None = None) -> int:
    """Announce new matches (from a check or a scan): webhooks now, e-mail now for "immediate" collections.

    With ``scan`` (``{"id", "source", "watch"}``: the matches of one bulk scan), one summary per
    collection: one ``scan.matches`` webhook event listing them instead of a ``match.created`` per
    match, and an e-mail whose subject names the scan. Returns the number of e-mails sent. Idempotent.
    """
    if scan is None:
        webhook_matches_created(match_ids=match_ids)
    else:
        webhook_scan_summary(scan=scan, match_ids=match_ids)
    due = Match.objects.filter(
        Q(protected_image__collection__alert_frequency=AlertFrequency.IMMEDIATE)
        | Q(hash_list_entry__isnull=False),  # a hash list's recipients are told at once
        pk__in=match_ids, alerted__isnull=True, review_status=Match.Review.NEW,
    ).values_list("id", flat=True)
    return _claim_and_send(list(due), digest=None, scan=scan)


def match_digest_send(*, frequency: str, now: datetime | None = None) -> int:
    """Send each collection on this digest frequency one e-mail with its unannounced new matches."""
    if frequency not in DIGEST_FREQUENCIES:
        raise ValueError(f"not a digest frequency: {frequency!r}")
    now = now or timezone.now()
    due = Match.objects.filter(
        alerted__isnull=True, review_status=Match.Review.NEW, created__lte=now, created__gte=now - DIGEST_LOOKBACK,
        protected_image__collection__alert_frequency=frequency,
    ).values_list("id", flat=True)
    return _claim_and_send(list(due), digest=frequency)


def _claim_and_send(ids: list[int], *, digest: str | None, scan: dict[str, Any] | None = None) -> int:
    if not ids:
        return 0
    claim = timezone.now()  # microsecond timestamp: doubles as this run's claim token
    Match.objects.filter(pk__in=ids, alerted__isnull=True).update(alerted=claim)
    claimed = list(
        Match.objects.filter(pk__in=ids, alerted=claim)
        .select_related("organisation", "protected_image__collection", "source_check", "hash_list_entry__hash_list")
        .order_by("protected_image__collection_id", "hash_list_entry__hash_list_id", "-score", "-id")
    )
    # One e-mail per collection, and per hash list for hash-list matches (no protected image).
    groups: dict[tuple[str, int], list[Match]] = {}
    for m in claimed:
        groups.setdefault(("c", _alert_target(m).pk) if m.protected_image else ("h", _alert_target(m).pk), []).append(m)
    sent = 0
    pending = list(groups.values())
    for i, group in enumerate(pending):
        collection = _alert_target(group[0])
        if not collection.alert_recipients:
            continue  # claimed anyway: nobody to tell, and a later recipient should not get old news
        try:
            _send(collection, group, digest=digest, scan=scan)
        except Exception:
            unsent = [m.pk for g in pending[i:] for m in g]
            Match.objects.filter(pk__in=unsent, alerted=claim).update(alerted=None)
            raise
        sent += 1
    return sent


def _alert_target(match: Match) -> Collection | HashList:
    """Whose recipients hear of a match: its protected image's collection, or its hash list."""
    if match.protected_image is not None:
        return match.protected_image.collection
    assert match.hash_list_entry is not None  # a match names one or the other (a database constraint)
    return match.hash_list_entry.hash_list


def _match_url(match: Match) -> str:
    return settings.SITE_URL + reverse("portal:match", args=[match.organisation.slug, match.pk])


def _send(collection: Collection | HashList, matches: list[Match], *, digest: str | None,
          scan: dict[str, Any] | None = None) -> None:
    organisation = matches[0].organisation
    desk_filter = f"&collection={collection.pk}" if isinstance(collection, Collection) else ""
    shown = matches[:EMAIL_LIST_LIMIT]
    context = {
        "collection": collection,
        "organisation": organisation,
        "digest": digest,
        "digest_label": dict(AlertFrequency.choices).get(digest, "") if digest else "",
        "items": [{"match": m, "url": _match_url(m), "suspect": _suspect_label(m)} for m in shown],
        "count": len(matches),
        "more": len(matches) - len(shown),
        "desk_url": settings.SITE_URL + reverse("portal:desk", args=[organisation.slug])
        + f"?status=new{desk_filter}",
        "settings_url": settings.SITE_URL + reverse("portal:settings-alerts", args=[organisation.slug]),
        "site_url": settings.SITE_URL,
        "scan": scan,
    }
    noun = "match" if len(matches) == 1 else "matches"
    retro = sum(m.found_retroactively for m in matches)
    if retro:  # images protected after the suspect was seen (matching/retro.py)
        noun += " found retroactively" if retro == len(matches) else f" ({retro} found retroactively)"
    if digest:
        subject = f"[imgprotect] {context['digest_label']}: {len(matches)} new {noun} in {collection.name}"
    elif scan:
        subject = f"[imgprotect] Scan of {scan['source']}: {len(matches)} new {noun} in {collection.name}"
    else:
        subject = f"[imgprotect] {len(matches)} new {noun} in {collection.name}"
    message = EmailMultiAlternatives(
        subject=one_line(subject),  # a name stored before names were single-line (catalog/validators.py)
        body=render_to_string("portal/email/matches.txt", context),
        to=collection.alert_recipients,
    )
    message.attach_alternative(render_to_string("portal/email/matches.html", context), "text/html")
    message.send()


def _suspect_label(match: Match) -> str:
    check = match.source_check
    if check is None:
        return match.suspect_key or "scanned image"
    return check.original_name or f"check {check.pk}"


def pending_digest_counts(collections: Iterable[Collection]) -> dict[int, int]:
    """How many new matches each digest collection will announce next (for the settings page)."""
    ids = [c.pk for c in collections if c.alert_frequency in DIGEST_FREQUENCIES]
    counts: dict[int, int] = {}
    for cid in Match.objects.filter(
        alerted__isnull=True, review_status=Match.Review.NEW, protected_image__collection_id__in=ids,
        created__gte=timezone.now() - DIGEST_LOOKBACK,
    ).values_list("protected_image__collection_id", flat=True):
        counts[cid] = counts.get(cid, 0) + 1
    return counts
