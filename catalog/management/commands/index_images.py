"""index_images --org ORG --collection NAME SOURCE [--spark-master URL]  (DESIGN.md §5).

Without ``--spark-master`` (and with ``IMGPROTECT_BULK_VIA_SPARK`` off) the
images are indexed in this process, one by one. With it, a bulk job runs the
Spark path (``matching.bulk``): same keys, same per-file reasons, same summary.
Rerunning the command after a failed or interrupted Spark run resumes that job.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, TextIO

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog import services
from catalog.models import ProtectedImage
from catalog.sources import SourceError, iter_source, source_check_allowed
from matching.core.errors import ImageError, RetryableError
from matching.core.loading import load_image

if TYPE_CHECKING:  # the bulk app is imported only on the Spark path
    from django.db.models import QuerySet

    from matching.bulk.models import BulkJob, BulkJobError

# Beyond this many, per-file errors are summarised (the admin and the API list them all).
MAX_ERRORS_PRINTED = 1000


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream, total: int | None = None) -> None:  # type: ignore[no-untyped-def]
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
    from matching.bulk.services import bulkjob_run

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


class Command(BaseCommand):
    help = "Index every image under SOURCE (a directory or s3://bucket/prefix) into a collection."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--org", required=True, help="organisation slug (created when absent)")
        parser.add_argument("--collection", required=True, help="collection name or slug (created when absent)")
        parser.add_argument("--spark-master", default=None,
                            help="run through Spark on this master (local[*], local[2], spark://host:7077); "
                                 "the default is in-process unless IMGPROTECT_BULK_VIA_SPARK is set")
        parser.add_argument("--embed", action=argparse.BooleanOptionalAction, default=None,
                            help="Spark path: compute CNN embeddings (default: when the CNN stage is enabled)")
        parser.add_argument("source")

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        try:
            source = source_check_allowed(opts["source"], organisation_slug=slugify(opts["org"]), trusted=True)
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        organisation = services.organisation_get_or_create(slug=opts["org"])
        collection = services.collection_get_or_create(organisation=organisation, name=opts["collection"])
        if opts["spark_master"] or settings.IMGPROTECT_BULK_VIA_SPARK:
            return self.handle_spark(organisation, collection, opts["source"], opts)
        return self.handle_in_process(organisation, collection, source)

    def handle_in_process(self, organisation, collection, source: str) -> None:  # type: ignore[no-untyped-def]
        max_bytes = settings.IMGPROTECT_MAX_UPLOAD_BYTES
        try:
            items = list(iter_source(source, max_bytes=max_bytes))
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        existing = set(ProtectedImage.objects.filter(collection=collection).values_list("key", flat=True))
        progress = Progress(sys.stderr, total=len(items))
        indexed = unchanged = failed = 0
        started = time.monotonic()
        for n, item in enumerate(items, 1):
            if item.key in existing:
                unchanged += 1
            else:
                try:
                    data = item.read()
                    loaded = load_image(data, max_bytes=max_bytes, max_pixels=settings.IMGPROTECT_MAX_PIXELS)
                    services.protected_image_add(collection=collection, key=item.key, data=data, loaded=loaded,
                                                 filename=item.key.rsplit("/", 1)[-1], index_now=True)
                    indexed += 1
                except (ImageError, services.ServiceError, RetryableError, OSError) as exc:
                    failed += 1
                    message = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)
                    progress.close()  # keep the error on its own line
                    self.stderr.write(f"skipped {item.key}: {message}")
            progress.update(n, failed)
        progress.close()
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"indexed {indexed}, unchanged {unchanged}, failed {failed} of {len(items)} files "
            f"into {organisation.slug}/{collection.slug} in {elapsed:.1f}s"
        )

    def handle_spark(self, organisation, collection, source: str, opts) -> None:  # type: ignore[no-untyped-def]
        from matching.bulk import selectors as bulk_selectors
        from matching.bulk import services as bulk

        started = time.monotonic()
        job = bulk.bulkjob_find_resumable(organisation=organisation, kind="index", source=source,
                                          collection=collection)
        if job is not None:
            job = bulk.bulkjob_resume(job=job, start=False)
            self.stderr.write(f"resuming bulk job {job.pk} (attempt {job.attempts + 1}): only missing keys are computed")
        else:
            try:
                job = bulk.bulkjob_create(organisation=organisation, kind="index", source=source,
                                          collection=collection, embed=opts["embed"],
                                          spark_master=opts["spark_master"], trusted=True, start=False)
            except services.ServiceError as exc:
                raise CommandError(exc.message) from exc
        job = run_bulk_job(job, sys.stderr)
        print_errors(self, bulk_selectors.bulkjob_errors(job=job))
        if job.status != "done":
            if job.log_tail:
                self.stderr.write(job.log_tail.rstrip()[-3000:])
            raise CommandError(f"bulk job {job.pk} {job.status}: {job.error or 'stopped'}"
                               " (rerun the same command to resume it)")
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"indexed {job.done}, unchanged {job.skipped}, failed {job.failed} of {job.total} files "
            f"into {organisation.slug}/{collection.slug} in {elapsed:.1f}s (Spark, bulk job {job.pk})"
        )
