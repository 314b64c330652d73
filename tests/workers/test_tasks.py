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
