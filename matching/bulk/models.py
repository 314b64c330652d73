"""Bulk jobs: index a source into a collection, or scan a crawl for copies, on Spark."""
from __future__ import annotations

import datetime
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
    # A scheduled run of a watch (it scans only the keys the watch has not seen yet).
    watch = models.ForeignKey("Watch", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # Scans: the match reports this job wrote (all its attempts), for its one alert summary per collection.
    matches = models.ManyToManyField("matching.Match", blank=True, related_name="bulk_jobs")

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


class Watch(models.Model):
    """A source an organisation monitors: every hour or day, a scan of the keys not seen before.

    Each run is an ordinary scan ``BulkJob`` (``runs``) given the watch's seen keys as its skip
    list; the loader records every key it handled in ``WatchKey``. State, shown to people:
    paused (``enabled`` off), failing (the last run, or starting it, failed: ``last_error`` or
    the run's error), running, ok, or scheduled (never ran).
    """

    class Schedule(models.TextChoices):
        HOURLY = "hourly", "Every hour"
        DAILY = "daily", "Every day"

    INTERVALS = {Schedule.HOURLY: datetime.timedelta(hours=1), Schedule.DAILY: datetime.timedelta(days=1)}

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="watches")
    source = models.CharField(max_length=2048, help_text="A directory under the organisation's roots, or s3://bucket/prefix.")
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="watches",
                                   help_text="Only match this collection (default: all of the organisation's).")
    schedule = models.CharField(max_length=8, choices=Schedule.choices, default=Schedule.DAILY)
    enabled = models.BooleanField(default=True, help_text="Off: paused, no run starts.")
    next_run = models.DateTimeField(default=timezone.now, db_index=True)
    last_run = models.DateTimeField(null=True, blank=True, help_text="When the last run started.")
    last_job = models.ForeignKey(BulkJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_error = models.TextField(blank=True, help_text="Why the last run could not start (source gone, not allowed).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["enabled", "next_run"], name="watch_due")]

    def __str__(self) -> str:
        return f"watch {self.pk} of {self.source}"

    @property
    def interval(self) -> datetime.timedelta:
        return self.INTERVALS[self.Schedule(self.schedule)]

    @property
    def state(self) -> str:
        """paused, failing, running, ok or scheduled."""
        return self.state_and_reason[0]

    @property
    def state_and_reason(self) -> tuple[str, str]:
        if not self.enabled:
            return "paused", "Paused: no run starts until the watch is resumed."
        if self.last_error:
            return "failing", self.last_error
        job = self.last_job
        if job is None:
            return "scheduled", "Not run yet."
        if job.status == BulkJob.Status.FAILED:
            return "failing", f"Run #{job.pk} failed: {job.error}"
        if job.status == BulkJob.Status.CANCELLED:
            return "failing", f"Run #{job.pk} was cancelled."
        if job.status in BulkJob.ACTIVE:
            return "running", f"Run #{job.pk} is {job.status}."
        return "ok", f"Run #{job.pk} scanned {job.done} new file(s), {job.failed} unusable, {job.matched} with matches."

    @property
    def status_reason(self) -> str:
        return self.state_and_reason[1]


class WatchKey(models.Model):
    """A key a watch's runs already handled: later runs skip it (one row per key, a crawl may have millions)."""

    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="seen_keys")
    key = models.CharField(max_length=1024)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["watch", "key"], name="uniq_watch_key")]

    def __str__(self) -> str:
        return self.key
