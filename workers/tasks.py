"""Thin Celery tasks: ids in, one service call, bounded retries (docs/coding-habits.md, habits 2 and 4).

Image errors are permanent and never retried; anything else (a lost database
or storage connection) is retried with backoff a bounded number of times.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.db.models import F, Q
from django.utils import timezone

from matching import alerts, protection, retro, selftest, services, suspects
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


# reject_on_worker_lost: a pool process that dies mid-task (OOM) gives its message back at once; the
# claim in the service bounds the loop (a running check is taken over only after its deadline, three times).
@shared_task(acks_late=True, reject_on_worker_lost=True, **RETRY)
def run_check(check_id: int) -> None:
    try:
        services.check_run(check_id=check_id)
    except ImageError as exc:
        log.warning("check %s failed: %s", check_id, exc.reason)


@shared_task(acks_late=True, reject_on_worker_lost=True, **RETRY)
def run_check_partial(check_id: int) -> None:
    services.check_partial_run(check_id=check_id)


# Ten or eleven checks of matching: longer limits than a check's, still under the broker's visibility
# timeout (docs/architecture.md, "When a worker dies"); the claim makes a redelivery a no-op.
@shared_task(acks_late=True, soft_time_limit=150, time_limit=180, **RETRY)
def run_self_test(self_test_id: int) -> None:
    try:
        selftest.selftest_run(self_test_id=self_test_id)
    except ImageError as exc:
        log.warning("self-test %s failed: %s", self_test_id, exc.reason)


@shared_task(acks_late=True, **RETRY)
def send_match_alerts(check_id: int) -> None:
    alerts.match_alerts_send(check_id=check_id)


# Not acks_late: a re-check of 100,000 suspects outlasts the broker's visibility timeout, and a
# redelivery while it runs would judge every suspect twice. Pairs reported already are skipped,
# so a retry after an error adds nothing twice.
@shared_task(soft_time_limit=600, time_limit=660, **RETRY)
def recheck_suspects(image_ids: list[int]) -> int:
    return len(retro.suspects_recheck(image_ids=image_ids))


@shared_task(acks_late=True, **RETRY)
def send_retro_alerts(match_ids: list[int]) -> int:
    return alerts.match_alerts_send_for(match_ids=match_ids)


@shared_task(**RETRY)
def purge_suspect_signals(organisation_id: int | None = None) -> int:
    """Delete suspect signals past each organisation's retention (Celery beat, hourly; and one
    organisation's when its retention changes)."""
    return suspects.suspect_signals_purge(organisation_id=organisation_id)


@shared_task
def sweep_stale_work() -> int:
    """Re-queue checks stuck in ``running`` past the deadline (a worker died mid-way), and partial-copy
    searches stuck the same way (after three tries those fail; the check keeps its first answer).
    Queued work whose message went down with its worker is sent once more (docs/architecture.md,
    "When a worker dies")."""
    deadline = services.stale_before()
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
    # Queued that long and never sent again: its message may have died in a worker between delivery and
    # claim (the broker gives it back only after CELERY_VISIBILITY_TIMEOUT). Once per check: in a backlog
    # this adds one duplicate per check, which the claim turns into a no-op.
    for check_id in list(Check.objects.filter(Q(started__isnull=True) | Q(started__lt=deadline),
                                              status=Check.Status.QUEUED, attempts=0, created__lt=deadline)
                         .values_list("id", flat=True)):
        if Check.objects.filter(pk=check_id, status=Check.Status.QUEUED, attempts=0).update(attempts=1):
            run_check.delay(check_id)
            requeued += 1
    # Pending that long since the answer or the last send: the task was lost before a worker took it
    # (claiming makes a duplicate harmless). partial_started marks each send, so one per deadline.
    lost = list(Check.objects.filter(Q(partial_started__isnull=True, finished__lt=deadline)
                                     | Q(partial_started__lt=deadline), partial_search=Check.PartialSearch.PENDING)
                .values_list("id", flat=True))
    running = Check.PartialSearch.RUNNING
    for check_id in list(Check.objects.filter(partial_search=running, partial_started__lt=deadline)
                         .values_list("id", flat=True)):
        if Check.objects.filter(pk=check_id, partial_search=running, attempts__lt=3).update(
            partial_search=Check.PartialSearch.PENDING, attempts=F("attempts") + 1, partial_started=timezone.now()
        ):
            run_check_partial.delay(check_id)
            requeued += 1
        else:
            Check.objects.filter(pk=check_id, partial_search=running).update(
                partial_search=Check.PartialSearch.FAILED, completed=timezone.now())
    for check_id in lost:
        if Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.PENDING, attempts__lt=3).update(
            attempts=F("attempts") + 1, partial_started=timezone.now()
        ):
            run_check_partial.delay(check_id)
            requeued += 1
        else:  # its retries ran out: keep the answer, stop trying
            Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.PENDING).update(
                partial_search=Check.PartialSearch.FAILED, completed=timezone.now())
    return requeued

