"""The portal's bulk imports: start one for a collection, watch bulk jobs' progress.

Jobs themselves live in ``matching/bulk/`` (Spark). Sources typed in the
portal are untrusted: ``bulkjob_create(trusted=False)`` refuses any path
outside the organisation's roots in ``IMGPROTECT_SOURCE_ROOTS``.
"""
from __future__ import annotations

from typing import Any

from django.urls import reverse

from catalog.models import Collection, Organisation
from matching.bulk import selectors as bulk_selectors
from matching.bulk.models import BulkJob

RECENT_JOBS = 5


def _job(organisation: Organisation, job: BulkJob) -> dict[str, Any]:
    target = job.collection.name if job.collection is not None else "scan"
    return {
        "name": f"#{job.pk} {job.get_kind_display().lower()} · {target} · {job.source}",
        "status": job.status, "done": job.done, "total": job.total, "failed": job.failed,
        "progress_url": reverse("portal:bulk-progress", args=[organisation.slug, job.pk]),
    }


def collection_context(collection: Collection) -> dict[str, Any]:
    jobs = bulk_selectors.bulkjob_list(organisation=collection.organisation).filter(collection=collection)
    return {
        "enabled": True,
        "start_url": reverse("portal:bulk-start", args=[collection.organisation.slug, collection.pk]),
        "jobs": [_job(collection.organisation, j) for j in jobs[:RECENT_JOBS]],
    }


def dashboard_context(organisation: Organisation) -> dict[str, Any]:
    jobs = bulk_selectors.bulkjob_list(organisation=organisation).filter(status__in=BulkJob.ACTIVE)
    return {"enabled": True, "jobs": [_job(organisation, j) for j in jobs[:RECENT_JOBS]]}


def progress(job: BulkJob) -> dict[str, Any]:
    return {"status": job.status, "done": job.done, "total": job.total, "failed": job.failed}
