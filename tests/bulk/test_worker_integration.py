"""Bulk jobs in the production shape: PostgreSQL (COPY loading), Redis, a Celery worker, gunicorn.

A worker is killed with SIGKILL in the middle of a Spark job: its spark-submit
dies with it, the job stays ``running`` until the sweeper fails it with its
log, and a resume through the API (on a new worker) finishes with every image
exactly once.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.images import PHOTOS, resized_jpeg, truncated_jpeg
from tests.spark.processes import wait_gone
from tests.stack import django_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    crawls = tmp_path / "crawls"
    env = {
        "IMGPROTECT_DATA_DIR": str(tmp_path / "data"),
        "IMGPROTECT_SOURCE_ROOTS": f"it={crawls}",  # the stack's organisation (tests/stack.py)
        "IMGPROTECT_CNN_ENABLED": "false",
        "SPARK_MASTER": "local[2]",
        "FAKE_EMBEDDER_DELAY": "1.5",
    }
    with django_stack(tmp_path, db_prefix="imgprotect_bulk", env=env) as s:
        # The solo pool runs the task in the worker process itself, as a dedicated bulk worker would.
        yield {"base": s.base, "http": s.http, "crawls": crawls, "shell": s.shell, "logs": s.logs, "tmp": tmp_path,
               "start_worker": lambda name: s.start_worker(name, "--pool", "solo")}


def test_killed_worker_is_swept_and_the_resumed_job_loads_each_image_once(stack):
    base, http = stack["base"], stack["http"]
    files = {f"{name} {scale}.jpg": resized_jpeg(name, scale, 80) for name in PHOTOS for scale in (0.5, 0.7)}
    files["broken.jpg"] = truncated_jpeg()
    src = stack["crawls"] / "drop"
    src.mkdir(parents=True)
    for key, data in files.items():
        (src / key).write_bytes(data)
    collection = http.post(f"{base}/api/v1/collections/", json={"name": "Bulk"}).json()
    worker = stack["start_worker"]("first")
    # Created like the API does (untrusted source, enqueued on commit), plus the slow stand-in embedder.
    job_id = int(stack["shell"](
        "from catalog.models import Collection; from matching.bulk.services import bulkjob_create; "
        f"c = Collection.objects.get(pk={collection['id']}); "
        f"print(bulkjob_create(organisation=c.organisation, kind='index', source={str(src)!r}, collection=c, "
        "embed=True, extra_options={'embedder': 'tests.spark.fake_embedder:FakeEmbedder', 'partition_size': 3}).pk)"
    ))
    url = f"{base}/api/v1/bulk-jobs/{job_id}/"
    wait_until(lambda: (j := http.get(url).json())["status"] == "running" and 3 <= j["done"] + j["failed"]
                < len(files), 180, "the job to be half-way")
    driver_pid = int(stack["shell"](f"from matching.bulk.models import BulkJob; print(BulkJob.objects.get(pk={job_id}).driver_pid)"))
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert wait_gone(driver_pid, timeout=20) == []  # spark-submit died with its worker
    assert http.get(url).json()["status"] == "running"  # nobody is left to say otherwise

    # The sweeper's deadline has passed (simulated), so it fails the job and keeps the log.
    stack["shell"](f"from django.utils import timezone; from matching.bulk.models import BulkJob; "
                   f"BulkJob.objects.filter(pk={job_id}).update(heartbeat=timezone.now() - timezone.timedelta(hours=1))")
    assert stack["shell"]("from workers.bulk import sweep_stale_bulk_jobs; print(sweep_stale_bulk_jobs())") == "1"
    job = http.get(url).json()
    assert job["status"] == "failed" and "stopped" in job["error"] and "imgprotect-bulk:" in job["log_tail"]

    stack["start_worker"]("second")
    assert http.post(f"{url}resume/").json()["status"] == "queued"
    job = wait_until(lambda: (j := http.get(url).json())["status"] in ("done", "failed") and j, 240,
                      "the resumed job to finish")
    assert job["status"] == "done", job
    assert (job["total"], job["done"], job["failed"], job["attempts"]) == (len(files), len(files) - 1, 1, 2)
    images = http.get(f"{base}/api/v1/images/?collection={collection['id']}&page_size=100").json()
    keys = [image["key"] for image in images["results"]]
    assert sorted(keys) == sorted(k for k in files if k != "broken.jpg")  # each exactly once (COPY loading)
    assert {image["status"] for image in images["results"]} == {"indexed"}
    errors = http.get(f"{url}errors/").json()["results"]
    assert [(e["key"], e["code"]) for e in errors] == [("broken.jpg", "corrupt_image")]
    worker_log = (stack["logs"] / "second.log").read_text()
    assert "workers.bulk.run_bulk_job" in worker_log and "succeeded" in worker_log
