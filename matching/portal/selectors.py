"""Reads for the portal, always scoped to one organisation."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from catalog.models import Collection, Invitation, Membership, Organisation, ProtectedImage
from matching.models import Check, DismissedPair, Licence, Match, ReviewEvent, Verdict, Webhook, WebhookDelivery


def memberships_of(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organisation").order_by("organisation__name")


def collections_of(organisation: Organisation, *, search: str = "") -> QuerySet[Collection]:
    qs = Collection.objects.filter(organisation=organisation).annotate(image_count=Count("images"))
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(slug__icontains=search) | Q(description__icontains=search))
    return qs.order_by("name", "pk")


def collection_of(organisation: Organisation, pk: int) -> Collection | None:
    return Collection.objects.filter(organisation=organisation, pk=pk).first()


def images_of(collection: Collection, *, search: str = "", status: str = "") -> QuerySet[ProtectedImage]:
    qs = ProtectedImage.objects.filter(collection=collection)
    if search:
        qs = qs.filter(key__icontains=search)
    if status in ProtectedImage.Status.values:
        qs = qs.filter(status=status)
    return qs.order_by("-created", "-id")


def image_of(organisation: Organisation, pk: int) -> ProtectedImage | None:
    return ProtectedImage.objects.filter(organisation=organisation, pk=pk).select_related("collection").first()


def check_of(organisation: Organisation, pk: int) -> Check | None:
    return Check.objects.filter(organisation=organisation, pk=pk).select_related("collection", "submitted_by").first()


def checks_of(organisation: Organisation) -> QuerySet[Check]:
    return Check.objects.filter(organisation=organisation).select_related("collection", "submitted_by")


def matches_of(organisation: Organisation) -> QuerySet[Match]:
    return Match.objects.filter(organisation=organisation).select_related(
        "protected_image__collection", "source_check__origin", "reviewed_by", "hash_list_entry__hash_list")


def match_of(organisation: Organisation, pk: int) -> Match | None:
    return matches_of(organisation).filter(pk=pk).first()


def audit_trail(match: Match) -> QuerySet[ReviewEvent]:
    return ReviewEvent.objects.filter(match=match).select_related("actor").order_by("created", "id")


@dataclass(frozen=True)
class DeskFilters:
    verdict: str = ""
    collection: int | None = None
    status: str = "new"  # "" = any status
    date_from: date | None = None
    date_to: date | None = None
    search: str = ""


def desk_matches(organisation: Organisation, filters: DeskFilters) -> QuerySet[Match]:
    qs = matches_of(organisation)
    if filters.verdict in Verdict.values:
        qs = qs.filter(verdict=filters.verdict)
    if filters.collection:
        qs = qs.filter(protected_image__collection_id=filters.collection)
    if filters.status in Match.Review.values:
        qs = qs.filter(review_status=filters.status)
    tz = timezone.get_current_timezone()
    if filters.date_from:
        qs = qs.filter(created__gte=datetime.combine(filters.date_from, time.min, tz))
    if filters.date_to:
        qs = qs.filter(created__lt=datetime.combine(filters.date_to + timedelta(days=1), time.min, tz))
    if filters.search:
        qs = qs.filter(Q(protected_image__key__icontains=filters.search)
                       | Q(source_check__original_name__icontains=filters.search)
                       | Q(suspect_key__icontains=filters.search))
    return qs.order_by("-created", "-score", "-id")


def dashboard(organisation: Organisation, *, since: datetime | None) -> dict[str, Any]:
    matches = Match.objects.filter(organisation=organisation)
    month_ago = timezone.now() - timedelta(days=30)
    by_verdict = dict(
        matches.filter(created__gte=month_ago).values_list("verdict").annotate(n=Count("id")).values_list("verdict", "n")
    )
    by_status = dict(matches.values_list("review_status").annotate(n=Count("id")).values_list("review_status", "n"))
    return {
        "collections": list(collections_of(organisation)[:12]),
        "collection_count": Collection.objects.filter(organisation=organisation).count(),
        "image_count": ProtectedImage.objects.filter(organisation=organisation).count(),
        "pending_images": ProtectedImage.objects.filter(organisation=organisation,
                                                        status=ProtectedImage.Status.PENDING).count(),
        "verdicts": [(v, label, by_verdict.get(v, 0)) for v, label in Verdict.choices if v != Verdict.NONE],
        "verdict_max": max(by_verdict.values(), default=0),
        "statuses": [(s, label, by_status.get(s, 0)) for s, label in Match.Review.choices],
        "to_review": by_status.get(Match.Review.NEW, 0),
        "new_since": matches.filter(created__gt=since).count() if since else None,
        "since": since,
        "recent": list(matches_of(organisation).order_by("-created", "-id")[:8]),
        "recent_checks": list(checks_of(organisation).order_by("-created", "-id")[:5]),
    }


def members_of(organisation: Organisation) -> QuerySet[Membership]:
    return Membership.objects.filter(organisation=organisation).select_related("user").order_by("user__username")


def membership_of(organisation: Organisation, pk: int) -> Membership | None:
    return Membership.objects.filter(organisation=organisation, pk=pk).select_related("user").first()


def open_invitations(organisation: Organisation) -> list[Invitation]:
    rows = Invitation.objects.filter(organisation=organisation, accepted__isnull=True, revoked__isnull=True)
    return [i for i in rows.select_related("invited_by") if i.is_open]


def invitation_of(organisation: Organisation, pk: int) -> Invitation | None:
    return Invitation.objects.filter(organisation=organisation, pk=pk).first()


def webhooks_of(organisation: Organisation) -> QuerySet[Webhook]:
    return Webhook.objects.filter(organisation=organisation).annotate(
        delivered=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.DELIVERED)),
        failed=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.FAILED)),
    )


def webhook_of(organisation: Organisation, pk: int) -> Webhook | None:
    return Webhook.objects.filter(organisation=organisation, pk=pk).first()


def licences_of(organisation: Organisation) -> QuerySet[Licence]:
    return Licence.objects.filter(organisation=organisation).select_related(
        "protected_image__collection", "created_by")


def licence_of(organisation: Organisation, pk: int) -> Licence | None:
    return Licence.objects.filter(organisation=organisation, pk=pk).first()


def dismissed_pairs_of(organisation: Organisation) -> QuerySet[DismissedPair]:
    return DismissedPair.objects.filter(organisation=organisation).select_related(
        "protected_image__collection", "dismissed_by", "origin_match")


def dismissed_pair_of(organisation: Organisation, pk: int) -> DismissedPair | None:
    return DismissedPair.objects.filter(organisation=organisation, pk=pk).first()
