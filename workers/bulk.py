"""Thin Celery tasks for bulk jobs (ids in, one service call; docs/coding-habits.md, habits 2 and 4).

``run_bulk_job`` is long (it follows spark-submit, then loads the output), so
it has its own time limits; it is never retried: a failed job records why and
is resumed on request. A worker killed mid-job leaves the job ``running`` with
a stale heartbeat, which ``sweep_stale_bulk_jobs`` (Celery beat) turns into
``failed`` with the log tail.
"""
from __future__ import annotations

from celery import shared_task
from django.conf import settings

from matching.alerts import match_alerts_send_for
from matching.bulk.services import bulkjob_run, bulkjob_sweep, scan_summary_send
from matching.bulk.watches import watch_start_due
from workers.tasks import RETRY


@shared_task(acks_late=True, soft_time_limit=settings.IMGPROTECT_BULK_TIME_LIMIT_SECONDS,
             time_limit=settings.IMGPROTECT_BULK_TIME_LIMIT_SECONDS + 120)
def run_bulk_job(job_id: int) -> str | None:
    job = bulkjob_run(job_id=job_id)
    return job.status if job is not None else None


@shared_task(acks_late=True, **RETRY)
def send_scan_alerts(match_ids: list[int]) -> int:
    # Queued by releases before scans sent one summary each (send_scan_summary); kept for messages in flight.
    return match_alerts_send_for(match_ids=match_ids)


@shared_task
def sweep_stale_bulk_jobs() -> int:
    return bulkjob_sweep()


@shared_task(acks_late=True, **RETRY)
def send_scan_summary(job_id: int) -> int:
    return scan_summary_send(job_id=job_id)


@shared_task
def start_due_watches() -> int:
    return watch_start_due()
