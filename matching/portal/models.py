"""The portal's own rows: UI state only (per-user visits for "new since your last visit").

Domain rows the portal shows live in their apps: invitations in ``catalog``,
review decisions, licences, dismissed pairs and webhooks in ``matching``.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import Organisation


class PortalVisit(models.Model):
    """When a user was last seen in an organisation, for "new since your last visit"."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="uniq_portal_visit")]
