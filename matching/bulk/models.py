"""Bulk jobs: index a source into a collection, or scan a crawl for copies, on Spark."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Collection, Organisation


class BulkJob(models.Model):
    """A small state machine (docs/coding-habits.md, habit 5).

    queued -> running (Spark computes signals) -> loading (rows written) -> done;
    running/loading -> failed (an error, or the sweeper after the heartbeat stops);
    queued/running/loading -> cancelled; failed/cancelled -> queued (resume: only missing keys).
    """

    class Kind(models.TextChoices):
        INDEX = "index", "Index into a collection"
        SCAN = "scan", "Scan for copies"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        LOADING = "loading", "Loading"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.LOADING)
    RESUMABLE = (Status.FAILED, Status.CANCELLED)

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="bulk_jobs")
    # Index: the target collection. Scan: optional, only match this collection.
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="bulk_jobs")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    source = models.CharField(max_length=2048, help_text="A local directory or s3://bucket/prefix.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    options = models.JSONField(default=dict, blank=True, help_text='{"embed": bool, "spark_master": str}')
    # Counts. During a run they come from the Spark driver; when the job is done
    # they are exact: total == done + failed + skipped.
    total = models.PositiveBigIntegerField(null=True, blank=True, help_text="Files in the source.")
    done = models.PositiveBigIntegerField(default=0, help_text="Files indexed or scanned.")
    failed = models.PositiveBigIntegerField(default=0, help_text="Files skipped with a reason (see errors).")
    skipped = models.PositiveBigIntegerField(default=0, help_text="Keys the collection already held.")
    matched = models.PositiveBigIntegerField(default=0, help_text="Scanned images with at least one match.")
    match_reports = models.PositiveBigIntegerField(default=0, help_text="Match reports written by this scan.")
    rate = models.FloatField(null=True, blank=True, help_text="Files per second in the current run.")
    spark_app_id = models.CharField(max_length=128, blank=True)
    driver_pid = models.PositiveIntegerField(null=True, blank=True, help_text="spark-submit's process id.")
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Refreshed by the process following the job; the sweeper fails jobs whose heartbeat stopped.
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["organisation", "-created"], name="bulkjob_org_created"),
            models.Index(fields=["status", "heartbeat"], name="bulkjob_status_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def work_dir(self) -> Path:
        return Path(settings.IMGPROTECT_BULK_WORK_DIR) / f"job-{self.pk}"

    @property
    def embed(self) -> bool:
        return bool((self.options or {}).get("embed"))

    @property
    def finished_count(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def progress(self) -> float | None:
        """Share of the source handled, 0..1 (None until the source was listed)."""
        if not self.total:
            return 1.0 if self.status == self.Status.DONE else None
        return min(1.0, self.finished_count / self.total)

    @property
    def eta_seconds(self) -> float | None:
        if self.status != self.Status.RUNNING or not self.rate or not self.total:
            return None
        return max(0.0, (self.total - self.finished_count) / self.rate)

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or timezone.now()) - self.started).total_seconds()


class BulkJobError(models.Model):
    """One file a bulk job could not use, with why. A table (not JSON on the job): a crawl may have millions."""

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="errors")
    key = models.CharField(max_length=1024)
    code = models.CharField(max_length=64)
    reason = models.TextField()

    class Meta:
        ordering = ["job", "key"]
        # Loading the same output twice records each file once.
        constraints = [models.UniqueConstraint(fields=["job", "key"], name="uniq_bulkjob_error_key")]

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"
