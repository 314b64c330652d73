"""The production shape for real: PostgreSQL, a Redis broker, a Celery worker
process, a gunicorn web process and an SMTP server, all on loopback.

Upload a protected image -> the worker indexes it -> submit a resized,
re-encoded copy -> the worker writes a Match -> an e-mail arrives over SMTP.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from email import message_from_bytes
from pathlib import Path

import pytest
import requests

from tests.images import photo_png, resized_jpeg

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PG = dict(host="127.0.0.1", port=5432, user=os.environ.get("IMGPROTECT_TEST_PGUSER", "postgres"))
REDIS_URL = os.environ.get("IMGPROTECT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def smtp():  # type: ignore[no-untyped-def]
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list = []

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
            self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp):  # type: ignore[no-untyped-def]
    import psycopg2
    import redis

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is not there
        pytest.skip(f"PostgreSQL or Redis not reachable on loopback: {exc}")
    admin.autocommit = True
    dbname = f"imgprotect_it_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    data_dir = tmp_path_factory.mktemp("stack")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": f"it-{dbname}",  # never share a queue with another run
        "IMGPROTECT_DATA_DIR": str(data_dir),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp[0]),
        "SITE_URL": f"http://127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    bin_dir = Path(sys.executable).parent
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
    secret = subprocess.run([*manage, "create_api_key", "--org", "it", "--create-org", "--role", "owner"],
                            env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    logs = data_dir / "logs"
    logs.mkdir()
    worker = subprocess.Popen(
        [str(bin_dir / "celery"), "-A", "imgprotect", "worker", "-l", "info", "-c", "1",
         "-Q", env["CELERY_TASK_DEFAULT_QUEUE"], "-n", f"{dbname}@%h", "--without-gossip", "--without-mingle"],
        env=env, cwd=ROOT, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,
    )
    web = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "imgprotect.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "60"],
        env=env, cwd=ROOT, stdout=open(logs / "web.log", "wb"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        _wait_until(up, 30, "gunicorn")
        session = requests.Session()
        session.headers["Authorization"] = f"Api-Key {secret}"
        yield {"base": base, "http": session, "logs": logs, "env": env, "worker": worker}
    finally:
        for proc in (web, worker):
            proc.terminate()
        for proc in (web, worker):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()
        redis.Redis.from_url(REDIS_URL).delete(env["CELERY_TASK_DEFAULT_QUEUE"])


def test_upload_index_check_match_and_email(stack, smtp):
    base, http = stack["base"], stack["http"]
    _, inbox = smtp
    collection = http.post(f"{base}/api/v1/collections/",
                           json={"name": "Cats", "alert_emails": "legal@it.test"}).json()
    for name in ("chelsea", "coffee"):
        response = http.post(f"{base}/api/v1/images/", data={"collection": collection["id"]},
                             files={"file": (f"{name}.png", photo_png(name), "image/png")})
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "pending"  # the web process does not index; the worker does
    _wait_until(lambda: http.get(f"{base}/api/v1/images/?status=indexed").json()["count"] == 2, 60,
                "the worker to index both images")

    response = http.post(f"{base}/api/v1/checks/", files={"file": ("copy.jpg", resized_jpeg("chelsea", 0.6, 55))})
    assert response.status_code == 202, response.text
    url = response.json()["url"]
    check = _wait_until(lambda: (c := http.get(url).json())["status"] in ("done", "failed") and c, 60,
                        "the worker to run the check")
    assert check["status"] == "done", check
    assert check["result"]["verdict"] == "near_duplicate"
    assert [m["key"] for m in check["matches"]] == ["chelsea.png"]
    assert http.get(f"{base}/api/v1/matches/?verdict=near_duplicate").json()["count"] == 1

    _wait_until(lambda: inbox.messages, 30, "the alert e-mail over SMTP")
    recipients, message = inbox.messages[0]
    assert recipients == ["legal@it.test"]
    assert "Cats" in message["Subject"]
    text = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    assert "chelsea.png" in text.get_payload(decode=True).decode()
    worker_log = (stack["logs"] / "worker.log").read_text()
    assert "workers.tasks.run_check" in worker_log and "succeeded" in worker_log


def test_wait_parameter_against_a_real_worker(stack):
    base, http = stack["base"], stack["http"]
    response = http.post(f"{base}/api/v1/checks/?wait=20",
                         files={"file": ("unrelated.jpg", resized_jpeg("horse", 0.7), "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done" and response.json()["result"]["verdict"] == "none"


def test_corrupt_stored_image_fails_once_without_retry(stack):
    """A permanent image error is recorded with its reason and never retried."""
    base, http = stack["base"], stack["http"]
    collection = http.post(f"{base}/api/v1/collections/", json={"name": "Corrupt"}).json()
    # A row whose stored bytes rot after upload, enqueued through the real broker.
    snippet = f"""
from django.core.files.base import ContentFile
from catalog.models import Collection, ProtectedImage
from workers.tasks import index_protected_image
c = Collection.objects.get(pk={collection["id"]})
img = ProtectedImage(organisation_id=c.organisation_id, collection=c, key="rotten.png", sha256_bytes="0" * 64,
                     sha256_pixels="0" * 64, width=10, height=10, format="PNG")
img.file.save("rotten.png", ContentFile(b"rotten bytes"), save=True)
index_protected_image.delay(img.pk)
print(img.pk)
"""
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", snippet], env=stack["env"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    image_id = int(out.strip().splitlines()[-1])
    got = _wait_until(lambda: (i := http.get(f"{base}/api/v1/images/{image_id}/").json())["status"] != "pending"
                      and i, 60, "the worker to try the rotten image")
    assert got["status"] == "failed" and "not" in got["failure_reason"].lower()
    time.sleep(1)
    log = (stack["logs"] / "worker.log").read_text()
    assert "index_protected_image" in log
    assert "Retry in" not in log
