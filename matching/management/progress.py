"""What the bulk commands (index_images, scan_images) print: a progress bar while a bulk job runs in
the command's process, then its per-file errors, and why it stopped when it did not finish."""
from __future__ import annotations

import time
from typing import TextIO

from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet

from matching.bulk.models import BulkJob, BulkJobError
from matching.bulk.selectors import bulkjob_errors
from matching.bulk.services import bulkjob_run

# Beyond this many, per-file errors are summarised (the admin and the API list them all).
MAX_ERRORS_PRINTED = 1000


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream, total: int | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = total
        self.started = time.monotonic()
        self.shown = False

    def update(self, done: int, failed: int, *, rate: float | None = None, note: str = "") -> None:
        if not self.enabled:
            return
        if rate is None:
            rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (width - filled)
            left = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "?"
            text = f"\r[{bar}] {done}/{self.total} {rate:.0f}/s failed {failed} eta {left}"
        else:
            text = f"\r{done} files {rate:.0f}/s failed {failed}"
        self.stream.write(f"{text} {note}".rstrip() + "\033[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\n")
            self.shown = False


def print_errors(command: BaseCommand, errors: QuerySet[BulkJobError]) -> None:
    """Per-file errors of a bulk job, as the in-process path prints them."""
    count = errors.count()
    for error in errors[:MAX_ERRORS_PRINTED]:
        command.stderr.write(f"skipped {error.key}: {error.reason}")
    if count > MAX_ERRORS_PRINTED:
        command.stderr.write(f"... and {count - MAX_ERRORS_PRINTED} more (see the job's errors in the API or admin)")


def run_bulk_job(job: BulkJob, stream: TextIO) -> BulkJob:
    """Run a queued bulk job in this process with a live progress bar; the job as it ended."""
    progress = Progress(stream)
    phase: dict[str, str | None] = {"status": None}

    def on_progress(current: BulkJob) -> None:
        if current.total:
            progress.total = current.total
        if current.status == "loading" and phase["status"] != "loading":
            progress.update(current.finished_count, current.failed, rate=current.rate or 0.0, note="loading...")
        elif current.status == "running":
            note = "listing..." if not current.total else "starting Spark..." if not current.rate else ""
            progress.update(current.finished_count, current.failed, rate=current.rate or 0.0, note=note)
        phase["status"] = current.status

    try:
        finished = bulkjob_run(job_id=job.pk, on_progress=on_progress)
    except KeyboardInterrupt:
        raise CommandError(f"interrupted: bulk job {job.pk} failed; rerun the same command to resume it") from None
    finally:
        progress.close()
    if finished is None:
        raise CommandError(f"bulk job {job.pk} disappeared")
    return finished


def bulk_job_finish(command: BaseCommand, job: BulkJob) -> BulkJob:
    """Print a finished bulk job's per-file errors; a CommandError (with the log tail) unless it is done."""
    print_errors(command, bulkjob_errors(job=job))
    if job.status != "done":
        if job.log_tail:
            command.stderr.write(job.log_tail.rstrip()[-3000:])
        raise CommandError(f"bulk job {job.pk} {job.status}: {job.error or 'stopped'}"
                           " (rerun the same command to resume it)")
    return job
