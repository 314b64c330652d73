"""A worker killed under load loses nothing (docs/architecture.md, "When a worker dies").

The production shape with the product's default recovery settings: PostgreSQL, Redis, gunicorn with
two web workers, a prefork Celery worker and Celery beat. Six clients submit 40 checks; the worker,
its pool processes with it, is SIGKILLed while checks run; a new worker starts. Every check must end
``done`` within five minutes of the kill, with no HTTP 5xx and no Match twice.

The CNN is off to keep the test fast (no TensorFlow start in each worker): the claim, the redelivery
and the sweeper do not depend on which signals a check computes. The partial-copy pass (CNN only) is
covered by tests/workers/test_tasks.py.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.images import photo_png, resized_jpeg
from tests.stack import Stack, django_stack, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # recovery takes up to 5 min

PROTECTED = ["chelsea", "coffee", "astronaut", "rocket"]
UNRELATED = "horse"
CHECKS = 40
CLIENTS = 6
RECOVERY_S = 300  # every check done within five minutes of the kill


def suspect(i: int) -> tuple[bytes, str | None]:
    """A resized, re-encoded copy of a protected image (or an unrelated photo) and the key it must match."""
    names = [*PROTECTED, UNRELATED]
    name = names[i % len(names)]
    data = resized_jpeg(name, 0.6 + 0.05 * (i % 7), 60 + i % 30)  # distinct bytes for each check
    return data, (f"{name}.png" if name in PROTECTED else None)


def group_alive(pgid: int) -> bool:
    """Whether any process of this process group is left (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Clients:
    """Six threads with requests sessions: each submits its checks, then polls them until they end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.lock = threading.Lock()
        self.statuses: list[tuple[str, int]] = []  # (request, HTTP status) of every request the clients made
        self.checks: dict[int, tuple[str, str | None]] = {}  # index -> (url, expected key)
        self.final: dict[str, dict] = {}
        self.deadline = time.monotonic() + 900  # moved to kill + RECOVERY_S once the worker is killed
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def record(self, what: str, response: requests.Response) -> None:
        with self.lock:
            self.statuses.append((what, response.status_code))

    def client(self, n: int) -> None:
        http = requests.Session()
        http.headers.update(self.stack.http.headers)
        mine: dict[str, str | None] = {}
        for i in range(n, CHECKS, CLIENTS):
            data, expected = suspect(i)
            response = http.post(f"{self.stack.base}/api/v1/checks/",
                                 files={"file": (f"suspect-{i}.jpg", data, "image/jpeg")}, timeout=60)
            self.record("POST checks", response)
            if response.status_code == 202:
                mine[response.json()["url"]] = expected
                with self.lock:
                    self.checks[i] = (response.json()["url"], expected)
            time.sleep(0.2)  # a client's think time: submissions go on while the worker dies
        while mine and time.monotonic() < self.deadline:
            for url in list(mine):
                response = http.get(url, timeout=30)
                self.record("GET check", response)
                if response.ok and response.json()["status"] in ("done", "failed"):
                    with self.lock:
                        self.final[url] = response.json()
                    del mine[url]
            time.sleep(1)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=max(1.0, self.deadline - time.monotonic() + 60))


@pytest.fixture()
def stack(tmp_path):  # type: ignore[no-untyped-def]
    env = {"IMGPROTECT_DATA_DIR": str(tmp_path / "data"), "IMGPROTECT_CNN_ENABLED": "false"}
    with django_stack(tmp_path, db_prefix="imgprotect_kill", env=env, web_workers=2) as s:
        yield s


def test_a_worker_killed_under_load_loses_no_check(stack: Stack) -> None:
    base, http = stack.base, stack.http
    worker = stack.start_worker("worker-1", "--pool", "prefork", "-c", "2", new_session=True)
    stack.start_beat()  # the product's schedule: the sweeper runs as in production
    collection = http.post(f"{base}/api/v1/collections/", json={"name": "Protected"}).json()
    for name in PROTECTED:
        response = http.post(f"{base}/api/v1/images/", data={"collection": collection["id"]},
                             files={"file": (f"{name}.png", photo_png(name), "image/png")})
        assert response.status_code == 201, response.text
    wait_until(lambda: http.get(f"{base}/api/v1/images/?status=indexed").json()["count"] == len(PROTECTED), 120,
               "the worker to index the protected images")

    clients = Clients(stack)
    clients.start()

    def busy() -> bool:
        # A check running and more waiting: the worker is between two checks for milliseconds only.
        running = http.get(f"{base}/api/v1/checks/?status=running").json()["count"]
        return running > 0 and http.get(f"{base}/api/v1/checks/?status=queued").json()["count"] > 0

    # Kill while checks run: some claimed by the worker, others still to submit or in the queue. A
    # check can still end between the look and the kill; then a new worker takes over and is killed
    # in turn, up to three times, so that the test always proves the take-over of a claimed check.
    orphaned: list[int] = []
    for attempt in range(3):
        wait_until(lambda: len(clients.checks) >= CHECKS // 4 and busy(), 120, "the worker to run checks")
        os.killpg(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        clients.deadline = killed + RECOVERY_S
        worker.wait(timeout=30)
        wait_until(lambda: not group_alive(worker.pid), 30, "the worker's pool processes to die")
        orphaned = [c["id"] for c in http.get(f"{base}/api/v1/checks/?status=running").json()["results"]]
        worker = stack.start_worker(f"worker-{attempt + 2}", "--pool", "prefork", "-c", "2", new_session=True)
        if orphaned:
            break

    clients.join()
    recovered = time.monotonic() - killed
    print(f"{len(orphaned)} check(s) orphaned by the kill; all {len(clients.final)} ended "
          f"{recovered:.0f} s after it")
    assert orphaned, "the kill hit no running check: the test proved nothing"
    errors = [(what, code) for what, code in clients.statuses if code >= 500]
    assert errors == [], errors
    assert sorted(clients.checks) == list(range(CHECKS)), "every submission was accepted (202)"
    not_done = {url: c["status"] for url, c in clients.final.items() if c["status"] != "done"}
    missing = [url for url, _ in clients.checks.values() if url not in clients.final]
    assert not missing and not not_done, f"not done {RECOVERY_S} s after the kill: {missing} {not_done}"
    for url, expected in clients.checks.values():
        keys = [m["key"] for m in clients.final[url]["matches"]]
        assert keys == ([expected] if expected else []), (url, keys)

    duplicates = stack.shell(
        "from django.db.models import Count; from matching.models import Match; "
        "print(Match.objects.values('source_check', 'protected_image').annotate(n=Count('id'))"
        ".filter(n__gt=1).count(), Match.objects.count())")
    assert duplicates == f"0 {CHECKS - CHECKS // 5}", duplicates
    attempts = stack.shell(
        "from matching.models import Check; "
        f"print(min(Check.objects.filter(pk__in={orphaned!r}).values_list('attempts', flat=True)))")
    assert int(attempts) >= 1, "an orphaned check ended done without being taken over"
