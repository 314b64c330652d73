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
    # check_submit names the file from the decoded format; any other extension is refused (catalog/files.py).
    from catalog.files import safe_extension

    return f"checks/{instance.organisation_id}/{uuid.uuid4().hex}.{safe_extension(filename)}"


class Check(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class PartialSearch(models.TextChoices):
        """The partial-copy pass (a logo pasted into a picture, a corner cropped out of one).

        A check answers once the cheap passes are done (digests, hashes, the CNN on the
        whole picture, verification); when they found no copy, the partial-copy pass (CNN
        on 13 tiles, about 10x the cost) runs after the answer, in a task of its own, and
        adds what it finds to the same check.
        """

        NONE = "", "Not run"            # queued, failed, or a check from before the pass existed
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        SKIPPED = "skipped", "Not needed"  # a whole-frame copy was found, or no CNN to search with
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
    finished = models.DateTimeField(null=True, blank=True, help_text="When the first answer was written.")
    partial_search = models.CharField(max_length=16, choices=PartialSearch.choices, blank=True, default="",
                                      db_index=True)
    partial_started = models.DateTimeField(null=True, blank=True)
    completed = models.DateTimeField(null=True, blank=True, help_text="When every pass, the partial-copy one "
                                                                      "included, was done.")

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["organisation", "-created"], name="check_org_created")]

    def __str__(self) -> str:
        return f"check {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED}

    @property
    def is_complete(self) -> bool:
        """Finished, and no partial-copy search is still to come."""
        return self.is_finished and self.partial_search not in {self.PartialSearch.PENDING,
                                                                self.PartialSearch.RUNNING}


def evidence_upload_to(instance: "Match", filename: str) -> str:
    return f"evidence/{instance.organisation_id}/{uuid.uuid4().hex}.png"


class Match(models.Model):
    """A match report: a suspect image (from a check or a bulk scan) copies a protected image."""

    class Review(models.TextChoices):
        NEW = "new", "New"
        CONFIRMED = "confirmed", "Confirmed infringement"
        DISMISSED = "dismissed", "Dismissed"
        LICENSED = "licensed", "Licensed"

    # Named source_check because Model.check() is Django's system-check hook.
    # Null for matches found by a bulk scan, which name their suspect in suspect_key.
    source_check = models.ForeignKey(Check, null=True, blank=True, on_delete=models.CASCADE, related_name="matches")
    suspect_key = models.CharField(max_length=1024, blank=True, help_text="Where the suspect image came from.")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="matches")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="matches")
    score = models.FloatField()
    verdict = models.CharField(max_length=32, choices=Verdict.choices, db_index=True)
    signal_scores = models.JSONField(default=dict)
    # Geometric evidence: the copied region as polygons on both images and what was changed.
    region = models.JSONField(null=True, blank=True)
    edit_report = models.JSONField(null=True, blank=True)
    evidence = models.FileField(upload_to=evidence_upload_to, max_length=300, blank=True)
    review_status = models.CharField(max_length=16, choices=Review.choices, default=Review.NEW, db_index=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    alerted = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-score", "-id"]
        constraints = [models.UniqueConstraint(fields=["source_check", "protected_image"], name="uniq_match_pair")]
        indexes = [models.Index(fields=["organisation", "review_status", "-created"], name="match_org_review")]
        verbose_name_plural = "matches"

    def __str__(self) -> str:
        return f"{self.verdict} {self.score:.2f}: {self.source_check_id or self.suspect_key} ~ {self.protected_image_id}"
