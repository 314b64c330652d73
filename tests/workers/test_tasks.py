"""Task plumbing: JSON-safe arguments, the stale-work sweeper."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from matching import services
from matching.core.loading import load_image
from matching.models import Check
from tests.images import resized_jpeg
from workers import tasks

pytestmark = pytest.mark.django_db


def _queued_check(org) -> Check:  # type: ignore[no-untyped-def]
    data = resized_jpeg("coffee")
    return services.check_submit(organisation=org, data=data, loaded=load_image(data), filename="s.jpg")


def test_task_arguments_round_trip_json(org, django_capture_on_commit_callbacks, monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.run_check, "delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        check = _queued_check(org)
        assert sent == []  # nothing is enqueued before commit
    assert sent == [(check.pk,)]
    assert json.loads(json.dumps(sent[0])) == [check.pk]  # ids only, never model instances


def test_sweeper_requeues_stale_running_checks_then_gives_up(org, settings):
    check = _queued_check(org)
    stale = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    Check.objects.filter(pk=check.pk).update(status="running", started=stale)
    fresh = _queued_check(org)
    Check.objects.filter(pk=fresh.pk).update(status="running", started=timezone.now())

    assert tasks.sweep_stale_work() == 1  # requeued and run again (eager): the stale one finishes
    check.refresh_from_db()
    assert check.status == "done" and check.attempts == 1
    assert Check.objects.get(pk=fresh.pk).status == "running"  # not stale yet: untouched

    Check.objects.filter(pk=check.pk).update(status="running", started=stale, attempts=3)
    assert tasks.sweep_stale_work() == 0
    check.refresh_from_db()
    assert check.status == "failed" and check.failure_code == "stale"


def test_sweeper_requeues_stale_or_lost_partial_copy_searches_then_gives_up(org, settings, monkeypatch):
    check = _queued_check(org)
    stale = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    answered = {"status": "done", "finished": stale, "result": {"verdict": "none"}}
    Check.objects.filter(pk=check.pk).update(partial_search="running", partial_started=stale, **answered)
    lost = _queued_check(org)  # answered long ago, its task never reached a worker
    Check.objects.filter(pk=lost.pk).update(partial_search="pending", **answered)
    fresh = _queued_check(org)  # running, not stale yet
    Check.objects.filter(pk=fresh.pk).update(partial_search="running", partial_started=timezone.now(), **answered)
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_check_partial, "delay", sent.append)

    assert tasks.sweep_stale_work() == 2
    assert sorted(sent) == sorted([check.pk, lost.pk])
    check.refresh_from_db()
    assert check.partial_search == "pending" and check.attempts == 1
    assert Check.objects.get(pk=fresh.pk).partial_search == "running"

    assert Check.objects.get(pk=lost.pk).attempts == 1

    Check.objects.filter(pk__in=[check.pk, lost.pk]).update(partial_search="running", partial_started=stale,
                                                           attempts=3)
    Check.objects.filter(pk=lost.pk).update(partial_search="pending")  # failing for good: its task gave up
    sent.clear()
    assert tasks.sweep_stale_work() == 0 and sent == []
    for row in Check.objects.filter(pk__in=[check.pk, lost.pk]):
        assert row.partial_search == "failed" and row.completed is not None and row.status == "done"


def test_partial_copy_search_that_fails_goes_back_to_pending_for_a_retry(org, monkeypatch):
    check = _queued_check(org)
    Check.objects.filter(pk=check.pk).update(status="done", partial_search="pending", finished=timezone.now())

    def broken(**kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("index registry unreachable")

    monkeypatch.setattr(services, "find_candidates", broken)
    with pytest.raises(ConnectionError):
        services.check_partial_run(check_id=check.pk)
    check.refresh_from_db()
    assert check.partial_search == "pending" and check.result is None and check.completed is None


def test_a_redelivered_task_takes_over_a_check_whose_worker_died(org, settings):
    """The claim lets a redelivery re-take a running check only past the deadline, three times at most."""
    dead = _queued_check(org)
    stale = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    Check.objects.filter(pk=dead.pk).update(status="running", started=stale)
    live = _queued_check(org)
    Check.objects.filter(pk=live.pk).update(status="running", started=timezone.now() - timedelta(seconds=60))

    assert services.check_run(check_id=dead.pk).status == "done"
    assert Check.objects.get(pk=dead.pk).attempts == 1
    assert services.check_run(check_id=live.pk).status == "running"  # its attempt may still be alive
    assert Check.objects.get(pk=live.pk).attempts == 0

    Check.objects.filter(pk=dead.pk).update(status="running", started=stale, attempts=3)
    assert services.check_run(check_id=dead.pk).status == "running"  # out of attempts: the sweeper fails it


def test_a_redelivered_partial_copy_pass_takes_over_one_whose_worker_died(org, settings, monkeypatch):
    check = _queued_check(org)
    stale = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    Check.objects.filter(pk=check.pk).update(status="done", finished=stale, result={"verdict": "none"},
                                             partial_search="running", partial_started=stale)
    monkeypatch.setattr(tasks.run_check_partial, "delay", lambda check_id: None)
    assert services.check_partial_run(check_id=check.pk).partial_search == "done"
    assert Check.objects.get(pk=check.pk).attempts == 1


def test_sweeper_sends_a_lost_queued_check_once(org, settings, monkeypatch):
    old = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    lost = _queued_check(org)  # its message died in a worker before the claim
    young = _queued_check(org)
    Check.objects.filter(pk=lost.pk).update(created=old)
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_check, "delay", sent.append)

    assert tasks.sweep_stale_work() == 1 and sent == [lost.pk]
    assert Check.objects.get(pk=lost.pk).status == "queued"  # the claim is the worker's, not the sweeper's
    assert tasks.sweep_stale_work() == 0 and sent == [lost.pk]  # once: a backlog gets one duplicate at most
    assert Check.objects.get(pk=young.pk).attempts == 0


def test_sweeper_sends_a_lost_partial_copy_pass_once_per_deadline(org, settings, monkeypatch):
    check = _queued_check(org)
    stale = timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS + 5)
    Check.objects.filter(pk=check.pk).update(status="done", finished=stale, result={"verdict": "none"},
                                             partial_search="pending")
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_check_partial, "delay", sent.append)
    assert tasks.sweep_stale_work() == 1
    assert tasks.sweep_stale_work() == 0 and sent == [check.pk]  # the next minute's sweep waits


def test_recovery_settings_fit_the_task_time_limit(settings):
    """A dead worker's checks come back within about five minutes: beat sweeps every minute, the
    deadline and the broker's redelivery outlast the hard time limit (a live attempt is never re-run)."""
    limit = settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_BEAT_SCHEDULE["sweep-stale-work"]["schedule"] <= 60
    assert limit < settings.IMGPROTECT_STALE_AFTER_SECONDS <= limit + 60
    assert settings.IMGPROTECT_STALE_AFTER_SECONDS + 60 <= 300
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility >= limit + tasks.RETRY["retry_backoff_max"]
    for task in (tasks.run_check, tasks.run_check_partial):
        assert task.acks_late and task.reject_on_worker_lost and task.max_retries == 5


@pytest.mark.parametrize("task_name", ["run_check", "run_check_partial", "index_protected_image", "send_match_alerts"])
def test_promise_transient_errors_are_retried_at_most_5_times_with_backoff(task_name, monkeypatch):
    """A lost database connection (OperationalError) every time: the task runs once and is retried five
    times, each wait twice the last (jitter pinned to its top), then the error surfaces (workers/tasks.py RETRY)."""
    import random

    from celery.exceptions import Retry
    from django.db import OperationalError

    task = getattr(tasks, task_name)
    service = {"run_check": (services, "check_run"), "run_check_partial": (services, "check_partial_run"),
               "index_protected_image": (tasks.protection, "protected_image_index"),
               "send_match_alerts": (tasks.alerts, "match_alerts_send")}[task_name]
    attempts: list[int] = []

    def lost_connection(**kwargs: object) -> None:
        attempts.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(*service, lost_connection)
    monkeypatch.setattr(random, "randrange", lambda stop: stop - 1)  # full jitter at its largest
    countdowns: list[float] = []
    real_retry = task.retry

    def recording_retry(*args: object, **kwargs: object) -> Retry:
        countdowns.append(kwargs["countdown"])  # type: ignore[arg-type]
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(task, "retry", recording_retry)
    # Run eagerly, propagating, as a worker would: each Retry is a new delivery with one more retry counted.
    retries = 0
    with pytest.raises(OperationalError):
        while retries < 10:
            try:
                task.apply(args=[1], retries=retries, throw=True)
            except Retry:
                retries += 1
    assert len(attempts) == 6 and retries == 5  # 1 + 5 retries, no more
    assert countdowns[:5] == [2, 4, 8, 16, 32] and len(countdowns) == 6  # the sixth call gives up


@pytest.mark.parametrize("task_name", ["run_check", "run_check_partial", "index_protected_image"])
def test_promise_a_permanent_image_error_is_never_retried(task_name, monkeypatch):
    from matching.core.errors import ImageTooSmall

    task = getattr(tasks, task_name)
    service = {"run_check": (services, "check_run"), "run_check_partial": (services, "check_partial_run"),
               "index_protected_image": (tasks.protection, "protected_image_index")}[task_name]
    attempts: list[int] = []

    def unreadable(**kwargs: object) -> None:
        attempts.append(1)
        raise ImageTooSmall("2x2 pixels")

    monkeypatch.setattr(*service, unreadable)
    monkeypatch.setattr(task, "retry", lambda *a, **k: pytest.fail("an image error was retried"))
    try:
        task.apply(args=[1], throw=True)
    except ImageTooSmall:
        pass  # run_check_partial lets it surface; the others log it
    assert attempts == [1]
