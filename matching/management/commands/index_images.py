"""index_images --org ORG --collection NAME SOURCE [--spark-master URL]  (docs/cli.md).

Without ``--spark-master`` (and with ``IMGPROTECT_BULK_VIA_SPARK`` off) the
images are indexed in this process, one by one. With it, a bulk job runs the
Spark path (``matching.bulk``): same keys, same per-file reasons, same summary.
Rerunning the command after a failed or interrupted Spark run resumes that job.
"""
from __future__ import annotations

import argparse
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.text import slugify

from catalog import services
from catalog.management.database import database_ready
from catalog.models import ProtectedImage
from catalog.sources import SourceError, iter_source, source_check_allowed
from imgprotect.errors import ServiceError
from matching.bulk import services as bulk
from matching.core.errors import ImageError, RetryableError
from matching.core.loading import load_image
from matching.management.progress import Progress, bulk_job_finish, run_bulk_job
from matching.protection import protected_image_add
from matching.retro import recheck_queue_since

class Command(BaseCommand):
    help = "Index every image under SOURCE (a directory or s3://bucket/prefix) into a collection."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organisation slug (created when absent)")
        parser.add_argument("--collection", required=True, help="collection name or slug (created when absent)")
        parser.add_argument("--spark-master", default=None,
                            help="run through Spark on this master (local[*], local[2], spark://host:7077); "
                                 "the default is in-process unless IMGPROTECT_BULK_VIA_SPARK is set")
        parser.add_argument("--embed", action=argparse.BooleanOptionalAction, default=None,
                            help="Spark path: compute CNN embeddings (default: when the CNN stage is enabled)")
        parser.add_argument("source")

    def handle(self, *args, **opts):
        database_ready()
        try:
            source = source_check_allowed(opts["source"], organisation_slug=slugify(opts["org"]), trusted=True)
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        organisation = services.organisation_get_or_create(slug=opts["org"])
        collection = services.collection_get_or_create(organisation=organisation, name=opts["collection"])
        if opts["spark_master"] or settings.IMGPROTECT_BULK_VIA_SPARK:
            return self.handle_spark(organisation, collection, opts["source"], opts)
        return self.handle_in_process(organisation, collection, source)

    def handle_in_process(self, organisation, collection, source: str) -> None:
        max_bytes = settings.IMGPROTECT_MAX_UPLOAD_BYTES
        try:
            items = list(iter_source(source, max_bytes=max_bytes))
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        existing = set(ProtectedImage.objects.filter(collection=collection).values_list("key", flat=True))
        progress = Progress(sys.stderr, total=len(items))
        indexed = unchanged = failed = 0
        started, since = time.monotonic(), timezone.now()
        try:
            for n, item in enumerate(items, 1):
                if item.key in existing:
                    unchanged += 1
                else:
                    try:
                        data = item.read()
                        loaded = load_image(data, max_bytes=max_bytes, max_pixels=settings.IMGPROTECT_MAX_PIXELS)
                        protected_image_add(collection=collection, key=item.key, data=data, loaded=loaded,
                                            filename=item.key.rsplit("/", 1)[-1], index_now=True, recheck=False)
                        indexed += 1
                    except (ImageError, ServiceError, RetryableError, OSError) as exc:
                        failed += 1
                        message = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)
                        progress.close()  # keep the error on its own line
                        self.stderr.write(f"skipped {item.key}: {message}")
                progress.update(n, failed)
        finally:
            progress.close()
            # One retroactive re-check for the whole run, as a Spark load queues (not one per image);
            # an interrupted run's images are searched for too (a rerun skips their keys).
            recheck_queue_since(collection=collection, since=since)
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"indexed {indexed}, unchanged {unchanged}, failed {failed} of {len(items)} files "
            f"into {organisation.slug}/{collection.slug} in {elapsed:.1f}s"
        )

    def handle_spark(self, organisation, collection, source: str, opts) -> None:
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
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
        job = bulk_job_finish(self, run_bulk_job(job, sys.stderr))
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"indexed {job.done}, unchanged {job.skipped}, failed {job.failed} of {job.total} files "
            f"into {organisation.slug}/{collection.slug} in {elapsed:.1f}s (Spark, bulk job {job.pk})"
        )
