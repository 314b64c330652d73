"""The portal's own rows: invitations, the review audit trail, review decisions that
outlive one match (licences, dismissed pairs), webhooks and their delivery log,
and per-user visits for "new since your last visit"."""
from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models

from catalog.models import Organisation, ProtectedImage, Role
from matching.models import Check, Match


def hash_token(token: str) -> str:
    # Tokens are 256 random bits: one SHA-256 suffices and keeps lookups indexed.
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.email} → {self.organisation} ({self.role})"

    @property
    def is_open(self) -> bool:
        from django.utils import timezone

        return self.accepted is None and self.revoked is None and self.expires > timezone.now()


class ReviewAction(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed infringement"
    DISMISSED = "dismissed", "Dismissed"
    LICENSED = "licensed", "Marked licensed"
    REOPENED = "reopened", "Reopened"
    AUTO_DISMISSED = "auto_dismissed", "Auto-dismissed (pair dismissed before)"
    AUTO_LICENSED = "auto_licensed", "Auto-resolved (licensed source)"
    EXPORTED = "exported", "Evidence exported"


class ReviewEvent(models.Model):
    """The audit trail of a match: who decided what, when, and why."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    match = models.ForeignKey(Match, on_delete=models.CASCADE, related_name="review_events")
    action = models.CharField(max_length=32, choices=ReviewAction.choices)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} on match {self.match_id}"


class Licence(models.Model):
    """Someone holds a licence to use a protected image, from a source (a domain or a URL/path prefix).

    Matches of that image from that source are resolved as licensed without alerting.
    An empty source covers every source.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="licences")
    holder = models.CharField(max_length=200)
    source = models.CharField(max_length=500, blank=True)
    note = models.TextField(blank=True)
    origin_match = models.ForeignKey(Match, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["protected_image", "revoked"], name="licence_image_active")]

    def __str__(self) -> str:
        return f"{self.holder} may use {self.protected_image_id} from {self.source or 'anywhere'}"


class DismissedPair(models.Model):
    """A suspect picture and a protected image judged unrelated: the pair never alerts again.

    The suspect is identified by its SHA-256 digests (file bytes and decoded pixels)
    or, for scans, by its key.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="dismissed_pairs")
    suspect_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    suspect_sha256_pixels = models.CharField(max_length=64, blank=True, db_index=True)
    suspect_key = models.CharField(max_length=1024, blank=True)
    origin_match = models.ForeignKey(Match, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    dismissed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"dismissed {self.suspect_sha256[:12] or self.suspect_key} ~ {self.protected_image_id}"


class CheckOrigin(models.Model):
    """Where a suspect image submitted in the portal was found (a URL or a site), for licences."""

    source_check = models.OneToOneField(Check, on_delete=models.CASCADE, related_name="origin")
    source = models.CharField(max_length=500)

    def __str__(self) -> str:
        return self.source


def new_webhook_secret() -> str:
    import secrets

    return f"whsec_{secrets.token_urlsafe(32)}"


class Webhook(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    # Kept in clear: the service must sign with it. Only admins ever see it.
    secret = models.CharField(max_length=100, default=new_webhook_secret)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=64)
    # Unique per webhook, so a redelivered task or a second call never sends an event twice.
    event_key = models.CharField(max_length=128)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    next_retry = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt = models.DateTimeField(null=True, blank=True)
    delivered = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["webhook", "event_key"], name="uniq_webhook_event")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id} ({self.status})"


class PortalVisit(models.Model):
    """When a user was last seen in an organisation, for "new since your last visit"."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="uniq_portal_visit")]
