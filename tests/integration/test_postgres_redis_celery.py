"""The production shape for real: PostgreSQL, a Redis broker, a Celery worker
process, a gunicorn web process and an SMTP server, all on loopback.

Upload a protected image -> the worker indexes it -> submit a resized,
re-encoded copy -> the worker writes a Match -> an e-mail arrives over SMTP.
"""
from __future__ import annotations

import re
from email import message_from_bytes

import pytest

from tests.images import photo_png, resized_jpeg
from tests.stack import django_stack, free_port, wait_until

pytestmark = pytest.mark.integration


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
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("stack")
    env = {"IMGPROTECT_DATA_DIR": str(data_dir), "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp[0])}
    with django_stack(data_dir, db_prefix="imgprotect_it", env=env, web_workers=2) as s:
        s.start_worker("worker", "-c", "1")
        yield {"base": s.base, "http": s.http, "logs": s.logs, "shell": s.shell}


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
    wait_until(lambda: http.get(f"{base}/api/v1/images/?status=indexed").json()["count"] == 2, 60,
                "the worker to index both images")

    response = http.post(f"{base}/api/v1/checks/", files={"file": ("copy.jpg", resized_jpeg("chelsea", 0.6, 55))})
    assert response.status_code == 202, response.text
    url = response.json()["url"]
    check = wait_until(lambda: (c := http.get(url).json())["status"] in ("done", "failed") and c, 60,
                        "the worker to run the check")
    assert check["status"] == "done", check
    assert check["result"]["verdict"] == "near_duplicate"
    assert [m["key"] for m in check["matches"]] == ["chelsea.png"]
    assert http.get(f"{base}/api/v1/matches/?verdict=near_duplicate").json()["count"] == 1

    wait_until(lambda: inbox.messages, 30, "the alert e-mail over SMTP")
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
    first = response.json()
    assert first["status"] == "done" and first["result"]["verdict"] == "none"
    # No whole-frame copy: the partial-copy pass follows the answer, as a task of its own on the worker.
    assert first["partial_search"] in ("pending", "running", "done"), first
    final = wait_until(lambda: (c := http.get(first["url"]).json())["partial_search"] == "done" and c, 60,
                       "the worker to run the partial-copy pass")
    assert final["completed"] and "cnn_tiles_ms" in final["result"]["timings_ms"]
    assert "workers.tasks.run_check_partial" in (stack["logs"] / "worker.log").read_text()

    response = http.post(f"{base}/api/v1/checks/?wait=30&complete=true",
                         files={"file": ("unrelated.jpg", resized_jpeg("horse", 0.7), "image/jpeg")})
    assert response.status_code == 200 and response.json()["partial_search"] == "done", response.text


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
task = index_protected_image.delay(img.pk)
print(img.pk, task.id)
"""
    pk, task_id = stack["shell"](snippet).split()
    image_id = int(pk)
    got = wait_until(lambda: (i := http.get(f"{base}/api/v1/images/{image_id}/").json())["status"] != "pending"
                      and i, 60, "the worker to try the rotten image")
    assert got["status"] == "failed" and "not" in got["failure_reason"].lower()
    # The task's own end line ("... succeeded in" or "... raised"), not a guess at how long the worker takes.
    finished = re.compile(rf"index_protected_image\[{re.escape(task_id)}\] (succeeded in|raised)")
    log = wait_until(lambda: finished.search(text := (stack["logs"] / "worker.log").read_text()) and text,
                     30, "the worker to log the task's end")
    assert "Retry in" not in log


def test_promise_a_real_worker_finds_a_partial_copy(stack):
    """The partial-copy pass on a real worker (CNN on, the service's own precision): a brand mark no model saw,
    pasted at a fifth of the width of a photo nobody protected, is found as a modified copy, boxed."""
    from PIL import Image

    from bench.metrics import polygon_iou
    from tests.images import drawn_logo, encode, photo

    base, http = stack["base"], stack["http"]
    collection = http.post(f"{base}/api/v1/collections/", json={"name": "Brand"}).json()
    logo = drawn_logo()
    response = http.post(f"{base}/api/v1/images/", data={"collection": collection["id"], "key": "brand-mark.png"},
                         files={"file": ("brand-mark.png", encode(logo), "image/png")})
    assert response.status_code == 201, response.text
    wait_until(lambda: http.get(f"{base}/api/v1/images/{response.json()['id']}/").json()["status"] == "indexed", 60,
               "the worker to index the mark")
    suspect = photo("astronaut").copy()
    suspect.paste(logo.resize((102, 102), Image.Resampling.BILINEAR), (362, 210))
    sent = http.post(f"{base}/api/v1/checks/", files={"file": ("suspect.jpg", encode(suspect, "JPEG", quality=90))})
    assert sent.status_code == 202, sent.text
    check = wait_until(lambda: (c := http.get(sent.json()["url"]).json())["partial_search"] in ("done", "failed")
                       and c, 120, "the worker to finish the partial-copy pass")
    assert check["status"] == "done" and check["partial_search"] == "done", check
    assert check["result"]["verdict"] == "modified_copy", check["result"]
    match = next(m for m in check["matches"] if m["key"] == "brand-mark.png")
    box = [[362, 210], [464, 210], [464, 312], [362, 312]]
    assert polygon_iou(match["region"]["query"], box, suspect.size) >= 0.5
    assert "workers.tasks.run_check_partial" in (stack["logs"] / "worker.log").read_text()


def test_promise_the_sweeper_on_a_real_worker_requeues_a_check_whose_worker_died(stack):
    """A check left 'running' past the deadline with no message anywhere (its worker died holding it): the
    sweeper, run by the real worker through the broker, sends it again and the worker finishes it."""
    base, http = stack["base"], stack["http"]
    sent = http.post(f"{base}/api/v1/checks/?wait=20", files={"file": ("copy.jpg", resized_jpeg("coffee", 0.5, 60))})
    assert sent.status_code == 200 and sent.json()["status"] == "done", sent.text
    check_id = sent.json()["id"]
    orphaned = stack["shell"](f"""
from django.utils import timezone
from matching.models import Check, Match
Match.objects.filter(source_check_id={check_id}).delete()
print(Check.objects.filter(pk={check_id}).update(status="running", finished=None, result=None,
                                                 started=timezone.now() - timezone.timedelta(hours=1)))
""")
    assert orphaned == "1"
    assert http.get(f"{base}/api/v1/checks/{check_id}/").json()["status"] == "running"
    task_id = stack["shell"]("from workers.tasks import sweep_stale_work; print(sweep_stale_work.delay().id)")
    done = wait_until(lambda: (c := http.get(f"{base}/api/v1/checks/{check_id}/").json())["status"] == "done" and c,
                      60, "the sweeper to requeue the check and the worker to finish it")
    assert [m["key"] for m in done["matches"]] == ["coffee.png"]
    assert stack["shell"](f"from matching.models import Check; print(Check.objects.get(pk={check_id}).attempts)") == "1"
    assert f"workers.tasks.sweep_stale_work[{task_id}] succeeded" in (stack["logs"] / "worker.log").read_text()
