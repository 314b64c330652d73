"""Checks (one suspect image matched on demand) and the match reports they produce."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from catalog.models import ApiKey, Collection, Organisation, ProtectedImage


class Verdict(models.TextChoices):
    EXACT = "exact", "Exact copy"
    NEAR_DUPLICATE = "near_duplicate", "Near duplicate"
    MODIFIED_COPY = "modified_copy", "Modified copy"
    SIMILAR = "similar", "Similar"
    NONE = "none", "No match"


def check_upload_to(instance: "Check", filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"checks/{instance.organisation_id}/{uuid.uuid4().hex}.{ext[:8]}"


class Check(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="checks")
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.SET_NULL, help_text="Only match this collection."
    )
    file = models.FileField(upload_to=check_upload_to, max_length=300)
    original_name = models.CharField(max_length=255, blank=True)
    sha256_bytes = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    attempts = models.PositiveSmallIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["organisation", "-created"], name="check_org_created")]

    def __str__(self) -> str:
        return f"check {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED}


class Match(models.Model):
    # Named source_check because Model.check() is Django's system-check hook.
    source_check = models.ForeignKey(Check, on_delete=models.CASCADE, related_name="matches")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="matches")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="matches")
    score = models.FloatField()
    verdict = models.CharField(max_length=32, choices=Verdict.choices, db_index=True)
    signal_scores = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    alerted = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-score", "-id"]
        constraints = [models.UniqueConstraint(fields=["source_check", "protected_image"], name="uniq_match_pair")]
        verbose_name_plural = "matches"

    def __str__(self) -> str:
        return f"{self.verdict} {self.score:.2f}: check {self.source_check_id} ~ {self.protected_image_id}"
