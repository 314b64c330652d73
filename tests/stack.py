"""The production shape on loopback, for the real-service tests: a fresh PostgreSQL database,
Redis as the broker (a queue of its own), migrations, an owner API key and a gunicorn web
process; the test adds its Celery workers with ``Stack.start_worker``.

Shared by ``tests/integration`` and ``tests/bulk``. PostgreSQL and Redis must already run
(127.0.0.1:5432 and :6379); when they do not, the test is skipped, which CI turns into a failure.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = dict(host="127.0.0.1", port=5432, user=os.environ.get("IMGPROTECT_TEST_PGUSER", "postgres"))
REDIS_URL = os.environ.get("IMGPROTECT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Stack:
    base: str  # the web process's URL
    http: requests.Session  # authenticated with the owner's API key
    env: dict[str, str]
    logs: Path
    dbname: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def manage(self) -> list[str]:
        return [sys.executable, str(ROOT / "manage.py")]

    def start_worker(self, name: str, *pool: str, new_session: bool = False) -> subprocess.Popen:
        """A Celery worker on this stack's queue; ``pool`` e.g. ``("--pool", "solo")`` or ``("-c", "1")``.
        ``new_session``: the worker and its pool processes get a process group of their own (to kill them all)."""
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "imgprotect", "worker", "-l", "info", *pool,
             "-Q", self.env["CELERY_TASK_DEFAULT_QUEUE"], "-n", f"{name}-{self.dbname}@%h", "--without-gossip",
             "--without-mingle"],
            env=self.env, cwd=ROOT, stdout=open(self.logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        self.processes.append(worker)
        return worker

    def start_beat(self) -> subprocess.Popen:
        """Celery beat with the product's schedule (its state file in the logs folder)."""
        beat = subprocess.Popen(
            [str(BIN / "celery"), "-A", "imgprotect", "beat", "-l", "info", "-s", str(self.logs / "beat-schedule")],
            env=self.env, cwd=ROOT, stdout=open(self.logs / "beat.log", "wb"), stderr=subprocess.STDOUT,
        )
        self.processes.append(beat)
        return beat

    def shell(self, code: str) -> str:
        """The last line ``manage.py shell -c code`` prints."""
        return subprocess.run([*self.manage, "shell", "-c", code], env=self.env, cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]


@contextmanager
def django_stack(workdir: Path, *, db_prefix: str, env: dict[str, str], web_workers: int = 1) -> Iterator[Stack]:
    """Create the database, migrate, make an owner API key, start gunicorn; tear all of it down after."""
    import psycopg2
    import redis

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is not there
        pytest.skip(f"PostgreSQL or Redis not reachable on loopback: {exc}")
    admin.autocommit = True
    dbname = f"{db_prefix}_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    port = free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": f"it-{dbname}",  # never share a queue with another run
        "SITE_URL": f"http://127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
        "IMGPROTECT_CNN_PRECISION": "auto",  # the service's default, not the test process's float32
        # DEBUG=false is production: a real secret, and plain HTTP on loopback instead of the HTTPS redirect.
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_SSL_REDIRECT": "false",
        # One key drives every request of a test run: never throttled by accident (the limits have their own tests).
        "IMGPROTECT_API_RATE_PER_KEY": "100000/minute",
        "IMGPROTECT_API_RATE_PER_IP": "100000/minute",
        **env,
    }
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(base=f"http://127.0.0.1:{port}", http=requests.Session(), env=full_env, logs=logs, dbname=dbname)
    try:
        subprocess.run([*stack.manage, "migrate", "--noinput"], env=full_env, cwd=ROOT, check=True,
                       capture_output=True)
        secret = subprocess.run([*stack.manage, "create_api_key", "--org", "it", "--create-org", "--role", "owner"],
                                env=full_env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        stack.http.headers["Authorization"] = f"Api-Key {secret}"
        stack.processes.append(subprocess.Popen(
            [str(BIN / "gunicorn"), "imgprotect.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(web_workers),
             "--timeout", "60"],
            env=full_env, cwd=ROOT, stdout=open(logs / "web.log", "wb"), stderr=subprocess.STDOUT,
        ))

        def up() -> bool:
            try:
                return requests.get(f"{stack.base}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(up, 30, "gunicorn")
        yield stack
    finally:
        for proc in stack.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in stack.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()
        redis.Redis.from_url(REDIS_URL).delete(full_env["CELERY_TASK_DEFAULT_QUEUE"])
