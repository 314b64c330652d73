"""Thin Celery tasks: ids in, one service call, bounded retries (docs/coding-habits.md, habits 2 and 4).

Image errors are permanent and never retried; anything else (a lost database
or storage connection) is retried with backoff a bounded number of times.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from matching import alerts, protection, services
from matching.core.errors import ImageError
from matching.models import Check

log = logging.getLogger(__name__)

RETRY = {"autoretry_for": (Exception,), "dont_autoretry_for": (ImageError,), "retry_backoff": 2,
         "retry_backoff_max": 60, "retry_jitter": True, "max_retries": 5}


@shared_task(acks_late=True, **RETRY)
def index_protected_image(image_id: int) -> None:
    try:
        protection.protected_image_index(image_id=image_id)
    except ImageError as exc:
        log.warning("image %s cannot be indexed: %s", image_id, exc.reason)


@shared_task(acks_late=True, **RETRY)
def run_check(check_id: int) -> None:
    try:
        services.check_run(check_id=check_id)
    except ImageError as exc:
        log.warning("check %s failed: %s", check_id, exc.reason)


@shared_task(acks_late=True, **RETRY)
def run_check_partial(check_id: int) -> None:
    services.check_partial_run(check_id=check_id)


@shared_task(acks_late=True, **RETRY)
def send_match_alerts(check_id: int) -> None:
    alerts.match_alerts_send(check_id=check_id)


@shared_task
def sweep_stale_work() -> int:
    """Re-queue checks stuck in ``running`` past the deadline (a worker died mid-way), and partial-copy
    searches stuck the same way (after three tries those fail; the check keeps its first answer)."""
    deadline = timezone.now() - timezone.timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS)
    stale = list(Check.objects.filter(status=Check.Status.RUNNING, started__lt=deadline).values_list("id", flat=True))
    requeued = 0
    for check_id in stale:
        if Check.objects.filter(Q(pk=check_id) & Q(status=Check.Status.RUNNING) & Q(attempts__lt=3)).update(
            status=Check.Status.QUEUED, attempts=F("attempts") + 1
        ):
            run_check.delay(check_id)
            requeued += 1
        else:
            Check.objects.filter(pk=check_id, status=Check.Status.RUNNING).update(
                status=Check.Status.FAILED, failure_code="stale", failure_reason="Matching did not finish in time.",
                finished=timezone.now(),
            )
    # Pending that long: the task was lost before a worker took it (claiming makes a duplicate harmless).
    lost = list(Check.objects.filter(partial_search=Check.PartialSearch.PENDING, finished__lt=deadline)
                .values_list("id", flat=True))
    running = Check.PartialSearch.RUNNING
    for check_id in list(Check.objects.filter(partial_search=running, partial_started__lt=deadline)
                         .values_list("id", flat=True)):
        if Check.objects.filter(pk=check_id, partial_search=running, attempts__lt=3).update(
            partial_search=Check.PartialSearch.PENDING, attempts=F("attempts") + 1
        ):
            run_check_partial.delay(check_id)
            requeued += 1
        else:
            Check.objects.filter(pk=check_id, partial_search=running).update(
                partial_search=Check.PartialSearch.FAILED, completed=timezone.now())
    for check_id in lost:
        if Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.PENDING, attempts__lt=3).update(
            attempts=F("attempts") + 1
        ):
            run_check_partial.delay(check_id)
            requeued += 1
        else:  # its retries ran out: keep the answer, stop trying
            Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.PENDING).update(
                partial_search=Check.PartialSearch.FAILED, completed=timezone.now())
    return requeued

