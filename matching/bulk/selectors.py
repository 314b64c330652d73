"""Reads for bulk jobs, always scoped to one organisation."""
from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import Organisation
from matching.bulk.models import BulkJob, BulkJobError


def bulkjob_list(*, organisation: Organisation) -> QuerySet[BulkJob]:
    return BulkJob.objects.filter(organisation=organisation).select_related("collection")


def bulkjob_get(*, organisation: Organisation, job_id: int) -> BulkJob | None:
    return bulkjob_list(organisation=organisation).filter(pk=job_id).first()


def bulkjob_errors(*, job: BulkJob) -> QuerySet[BulkJobError]:
    return BulkJobError.objects.filter(job=job).order_by("key", "id")
