"""Writes the portal makes for its own pages: alert settings and thresholds of a collection, a check
submitted with where the suspect was found, and visits.

Domain writes live in their apps: invitations and members in ``catalog.services``,
webhooks in ``matching.webhooks``, review decisions in ``matching.review``.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog.models import AlertFrequency, Collection, Organisation
from catalog.services import collection_update
from imgprotect.errors import ServiceError
from matching.core.loading import LoadedImage
from matching.models import Check, CheckOrigin
from matching.portal.models import PortalVisit
from matching.services import check_submit


# --- collections: alerts and thresholds ----------------------------------------------

@transaction.atomic
def collection_alerts_set(*, collection: Collection, alert_emails: str, alert_frequency: str) -> Collection:
    if alert_frequency not in AlertFrequency.values:
        raise ServiceError("Unknown alert frequency.", code="invalid_frequency")
    return collection_update(collection=collection, alert_emails=alert_emails, alert_frequency=alert_frequency)


def collection_threshold_set(*, collection: Collection, phash_max_distance: int | None) -> Collection:
    if phash_max_distance is not None and not 0 <= phash_max_distance <= 64:
        raise ServiceError("The pHash distance must be between 0 and 64 bits.", code="invalid_threshold")
    return collection_update(collection=collection, phash_max_distance=phash_max_distance)


# --- checks submitted in the portal -----------------------------------------------------

@transaction.atomic
def portal_check_submit(*, organisation: Organisation, data: bytes, loaded: LoadedImage, filename: str,
                        collection: Collection | None, found_at: str, user: User) -> Check:
    """Submit a check and record where the suspect was found, before matching can run.

    The outer transaction holds back check_submit's on-commit matching until the
    origin row exists, so licences for that source apply to this very check.
    """
    check = check_submit(organisation=organisation, data=data, loaded=loaded, filename=filename,
                         collection=collection, submitted_by=user)
    if found_at.strip():
        CheckOrigin.objects.create(source_check=check, source=found_at.strip()[:500])
    return check


# --- visits -----------------------------------------------------------------------------------

def visit_touch(*, user: User, organisation: Organisation, now: datetime | None = None) -> datetime | None:
    """Record that ``user`` is here now; return when they were last here before (None: first visit)."""
    now = now or timezone.now()
    visit, created = PortalVisit.objects.get_or_create(user=user, organisation=organisation,
                                                       defaults={"last_seen": now})
    if created:
        return None
    previous = visit.last_seen
    # A minute's precision is enough; it keeps page views from writing on every request.
    PortalVisit.objects.filter(pk=visit.pk, last_seen__lt=now - timedelta(minutes=1)).update(last_seen=now)
    return previous
