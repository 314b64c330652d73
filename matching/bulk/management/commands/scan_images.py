"""scan_images --org ORG [--collection NAME] [--spark-master URL] SOURCE

Computes signals for every image of a crawl (a directory or s3://bucket/prefix)
with the Spark bulk job, matches each against the organisation's collections
and writes match reports (the crawled location as the suspect) and alerts,
exactly as checks do. Rerunning after a failure resumes the job.
"""
from __future__ import annotations

import argparse
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from catalog.management.database import database_ready
from catalog.models import Collection, Organisation
from imgprotect.errors import ServiceError
from matching.bulk import services
from matching.bulk.load import suspect_key
from matching.management.progress import bulk_job_finish, run_bulk_job
from matching.models import Match

MAX_MATCHES_PRINTED = 200


class Command(BaseCommand):
    help = "Scan every image under SOURCE for copies of the organisation's protected images."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organisation slug")
        parser.add_argument("--collection", help="only match this collection (name or slug)")
        parser.add_argument("--spark-master", default=None, help="Spark master (default: SPARK_MASTER)")
        parser.add_argument("--embed", action=argparse.BooleanOptionalAction, default=None,
                            help="compute CNN embeddings (default: when the CNN stage is enabled)")
        parser.add_argument("source")

    def handle(self, *args, **opts):
        database_ready()
        organisation = Organisation.objects.filter(slug=opts["org"]).first()
        if organisation is None:
            raise CommandError(f"no organisation {opts['org']!r}")
        collection = None
        if opts["collection"]:
            collection = (Collection.objects.filter(organisation=organisation, slug=opts["collection"]).first()
                          or Collection.objects.filter(organisation=organisation, name=opts["collection"]).first())
            if collection is None:
                raise CommandError(f"no collection {opts['collection']!r} in {organisation.slug}")
        started = time.monotonic()
        job = services.bulkjob_find_resumable(organisation=organisation, kind="scan", source=opts["source"],
                                              collection=collection)
        if job is not None:
            job = services.bulkjob_resume(job=job, start=False)
            self.stderr.write(f"resuming bulk job {job.pk}: only missing keys are computed")
        else:
            try:
                job = services.bulkjob_create(organisation=organisation, kind="scan", source=opts["source"],
                                              collection=collection, embed=opts["embed"],
                                              spark_master=opts["spark_master"], trusted=True, start=False)
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
        job = bulk_job_finish(self, run_bulk_job(job, sys.stderr))
        prefix = suspect_key(job.source, "")
        matches = (Match.objects.filter(organisation=organisation, source_check__isnull=True,
                                        suspect_key__startswith=prefix)
                   .select_related("protected_image__collection", "hash_list_entry__hash_list")
                   .order_by("suspect_key", "-score"))
        for match in matches[:MAX_MATCHES_PRINTED]:
            reference = (f"{match.protected_image.collection.slug}/{match.protected_image.key}" if match.protected_image
                         else f"hash-list:{match.reference_label}")
            self.stdout.write(f"match {match.suspect_key[len(prefix):]} ~ {reference} {match.verdict} {match.score:.2f}")
        self.stdout.write(
            f"scanned {job.done}, matched {job.matched} ({job.match_reports} new match reports), "
            f"failed {job.failed} of {job.total} files in {time.monotonic() - started:.1f}s (bulk job {job.pk})"
        )
