"""Telling owners about new matches: immediate e-mails (digests and webhooks build on this)."""
from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from catalog.models import AlertFrequency
from matching.models import Match


def match_alerts_send(*, check_id: int) -> int:
    """E-mail each collection's recipients about this check's new matches. Idempotent."""
    return match_alerts_send_for(match_ids=list(Match.objects.filter(source_check_id=check_id).values_list("id", flat=True)))


def match_alerts_send_for(*, match_ids: list[int]) -> int:
    """E-mail each collection's recipients about these new matches (from a check or a scan). Idempotent.

    Matches are claimed (``alerted`` set) before sending, so a redelivered task
    never sends twice; if sending fails the claim is released for a retry.
    """
    now = timezone.now()
    matches = list(
        Match.objects.filter(pk__in=match_ids, alerted__isnull=True)
        .select_related("protected_image__collection", "source_check")
        .order_by("protected_image__collection_id", "-score")
    )
    by_collection: dict[int, list[Match]] = {}
    for m in matches:
        by_collection.setdefault(m.protected_image.collection_id, []).append(m)
    sent = 0
    for group in by_collection.values():
        collection = group[0].protected_image.collection
        if collection.alert_frequency != AlertFrequency.IMMEDIATE:
            continue  # left unalerted for the digest (or never sent)
        ids = [m.pk for m in group]
        if Match.objects.filter(pk__in=ids, alerted__isnull=True).update(alerted=now) != len(ids):
            continue  # another delivery claimed them
        recipients = collection.alert_recipients
        if not recipients:
            continue
        lines = [
            f"imgprotect found {len(group)} match(es) for collection \"{collection.name}\".",
            "",
        ]
        for m in group:
            lines.append(f"- {m.get_verdict_display()} of \"{m.protected_image.key}\" (score {m.score:.2f})")
        check = group[0].source_check
        if check is not None:
            lines += ["", f"Suspect image: {check.original_name or 'upload'} (check {check.pk})",
                      f"Review: {settings.SITE_URL}/api/v1/checks/{check.pk}/"]
        else:
            lines += ["", f"Suspect image: {group[0].suspect_key}"]
        try:
            send_mail(
                subject=f"[imgprotect] {len(group)} match(es) in {collection.name}",
                message="\n".join(lines),
                from_email=None,
                recipient_list=recipients,
            )
        except Exception:
            Match.objects.filter(pk__in=ids, alerted=now).update(alerted=None)
            raise
        sent += 1
    return sent
