"""Watches: a source scanned every hour or day, each run only for the keys not seen before.

A run is an ordinary scan job (``bulkjob_create``, ``run_bulk_job``) with the watch's
seen keys as its skip list; the loader remembers the keys it handled
(``WatchKey``) in the same transaction as their match reports, so a run
that dies is resumed or redone without a key being reported twice or lost. Beat
calls ``watch_start_due`` every minute.
"""
from __future__ import annotations

import logging
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog.models import Collection, Organisation
from catalog.sources import SourceError, open_source, source_check_allowed
from imgprotect.errors import ServiceError
from matching.bulk.models import BulkJob, Watch
from matching.bulk.services import bulkjob_create
from matching.models import Match

log = logging.getLogger(__name__)

__all__ = ["watch_create", "watch_delete", "watch_get", "watch_list", "watch_matches", "watch_run",
           "watch_start_due", "watch_update"]


def watch_list(*, organisation: Organisation) -> QuerySet[Watch]:
    return Watch.objects.filter(organisation=organisation).select_related("collection", "last_job")


def watch_get(*, organisation: Organisation, watch_id: int) -> Watch | None:
    return watch_list(organisation=organisation).filter(pk=watch_id).first()


def watch_matches(*, watch: Watch) -> QuerySet[Match]:
    """The match reports of the watch's runs, newest first."""
    return (Match.objects.filter(organisation_id=watch.organisation_id, bulk_jobs__watch=watch)
            .select_related("protected_image__collection").order_by("-created", "-id").distinct())


def _validated_source(source: str, organisation: Organisation) -> str:
    """As a bulk scan from the API: only the organisation's roots (IMGPROTECT_SOURCE_ROOTS)."""
    try:
        return source_check_allowed(source, organisation_slug=organisation.slug, trusted=False)
    except SourceError as exc:
        raise ServiceError(str(exc), code="source_not_allowed") from exc


@transaction.atomic
def watch_create(*, organisation: Organisation, source: str, collection: Collection | None = None,
                 schedule: str = Watch.Schedule.DAILY, enabled: bool = True,
                 created_by: User | None = None) -> Watch:
    """Watch a source; its first run starts at the next beat (within a minute)."""
    if schedule not in Watch.Schedule.values:
        raise ServiceError(f"Unknown schedule {schedule!r}; use hourly or daily.", code="invalid_schedule")
    if collection is not None and collection.organisation_id != organisation.pk:
        raise ServiceError("The collection belongs to another organisation.", code="invalid_collection")
    canonical = _validated_source(source, organisation)
    if Watch.objects.filter(organisation=organisation, source=canonical, collection=collection).exists():
        raise ServiceError(f"{canonical} is already watched for this collection.", code="duplicate_watch")
    user = created_by if created_by is not None and created_by.is_authenticated else None
    return Watch.objects.create(organisation=organisation, source=canonical, collection=collection,
                                schedule=schedule, enabled=enabled, next_run=timezone.now(), created_by=user)


def watch_update(*, watch: Watch, schedule: str | None = None, enabled: bool | None = None) -> Watch:
    """Change the schedule, pause (``enabled=False``) or resume. Resuming a failing watch retries it now."""
    fields: dict[str, object] = {}
    next_run = watch.next_run
    if schedule is not None:
        if schedule not in Watch.Schedule.values:
            raise ServiceError(f"Unknown schedule {schedule!r}; use hourly or daily.", code="invalid_schedule")
        fields["schedule"] = schedule
        if watch.last_run is not None:
            next_run = watch.last_run + Watch.INTERVALS[Watch.Schedule(schedule)]
    if enabled is not None and enabled != watch.enabled:
        fields["enabled"] = enabled
        if enabled:  # a resumed watch runs at the next beat when a run is overdue, and retries a failure
            next_run = min(next_run, timezone.now())
            fields["last_error"] = ""
    if next_run != watch.next_run:
        fields["next_run"] = next_run
    if fields:
        Watch.objects.filter(pk=watch.pk).update(**fields)
        watch.refresh_from_db()
    return watch


def watch_delete(*, watch: Watch) -> None:
    """Delete the watch and its seen keys; its runs stay as bulk jobs (with their match reports)."""
    watch.delete()


def watch_run(*, watch: Watch, now: datetime | None = None) -> BulkJob | None:
    """Start one run of a watch now: a scan job of the keys it has not seen. None when it cannot start.

    Why a run could not start (the source is gone, no longer allowed, unreachable) is kept in
    ``last_error``, which makes the watch show as failing until a run starts again.
    """
    now = now or timezone.now()
    running = BulkJob.objects.filter(watch=watch, status__in=BulkJob.ACTIVE).first()
    if running is not None:  # an hourly watch of a big drop may outlast its hour: never two runs at once
        log.info("watch %s: run #%s still %s, not starting another", watch.pk, running.pk, running.status)
        return None
    try:
        source = _validated_source(watch.source, watch.organisation)  # the roots may have changed since
        open_source(source).check()  # gone, unreachable or empty: a reason now, not a failed JVM later
    except (ServiceError, SourceError) as exc:
        message = exc.message if isinstance(exc, ServiceError) else str(exc)
        Watch.objects.filter(pk=watch.pk).update(last_error=f"The source cannot be scanned: {message}",
                                                 last_run=now)
        log.warning("watch %s: %s", watch.pk, message)
        return None
    with transaction.atomic():
        job = bulkjob_create(organisation=watch.organisation, kind=BulkJob.Kind.SCAN, source=source,
                             collection=watch.collection, created_by=watch.created_by, trusted=False, watch=watch)
        Watch.objects.filter(pk=watch.pk).update(last_job=job, last_run=now, last_error="")
    return job


def watch_start_due(*, now: datetime | None = None) -> int:
    """Start every enabled watch whose ``next_run`` has passed (Celery beat, every minute).

    Each watch is claimed by moving its ``next_run`` on by its interval in one conditional UPDATE,
    so two beats (or a redelivered task) never start the same run twice. Returns the runs started.
    """
    now = now or timezone.now()
    started = 0
    for watch in Watch.objects.filter(enabled=True, next_run__lte=now).select_related("organisation", "collection",
                                                                                      "created_by"):
        if not Watch.objects.filter(pk=watch.pk, enabled=True, next_run=watch.next_run).update(
            next_run=now + watch.interval
        ):
            continue
        try:
            if watch_run(watch=watch, now=now) is not None:
                started += 1
        except Exception as exc:  # one broken watch must not stop the others
            log.exception("watch %s could not start", watch.pk)
            Watch.objects.filter(pk=watch.pk).update(last_error=f"The run could not start: {type(exc).__name__}: {exc}")
    return started
