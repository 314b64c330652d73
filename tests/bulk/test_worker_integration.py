"""Bulk jobs in the production shape: PostgreSQL (COPY loading), Redis, a Celery worker, gunicorn.

A worker is killed with SIGKILL in the middle of a Spark job: its spark-submit
dies with it, the job stays ``running`` until the sweeper fails it with its
log, and a resume through the API (on a new worker) finishes with every image
exactly once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.images import PHOTOS, resized_jpeg, truncated_jpeg
from tests.integration.test_postgres_redis_celery import PG, REDIS_URL, _free_port, _wait_until
from tests.spark.processes import wait_gone

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    import psycopg2
    import redis

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is not there
        pytest.skip(f"PostgreSQL or Redis not reachable on loopback: {exc}")
    admin.autocommit = True
    dbname = f"imgprotect_bulk_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    crawls = tmp_path / "crawls"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": f"it-{dbname}",
        "IMGPROTECT_DATA_DIR": str(tmp_path / "data"),
        "IMGPROTECT_SOURCE_ROOTS": str(crawls),
        "IMGPROTECT_CNN_ENABLED": "false",
        "SPARK_MASTER": "local[2]",
        "FAKE_EMBEDDER_DELAY": "1.5",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
    secret = subprocess.run([*manage, "create_api_key", "--org", "it", "--create-org", "--role", "owner"],
                            env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []

    def start_worker(name: str) -> subprocess.Popen:
        # The solo pool runs the task in the worker process itself, as a dedicated bulk worker would.
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "imgprotect", "worker", "-l", "info", "--pool", "solo",
             "-Q", env["CELERY_TASK_DEFAULT_QUEUE"], "-n", f"{name}-{dbname}@%h", "--without-gossip",
             "--without-mingle"],
            env=env, cwd=ROOT, stdout=open(logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
        )
        processes.append(worker)
        return worker

    def shell(code: str) -> str:
        return subprocess.run([*manage, "shell", "-c", code], env=env, cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip().splitlines()[-1]

    web = subprocess.Popen([str(BIN / "gunicorn"), "imgprotect.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
                           env=env, cwd=ROOT, stdout=open(logs / "web.log", "wb"), stderr=subprocess.STDOUT)
    processes.append(web)
    base = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Authorization"] = f"Api-Key {secret}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        _wait_until(up, 30, "gunicorn")
        yield {"base": base, "http": http, "crawls": crawls, "start_worker": start_worker, "shell": shell,
               "logs": logs, "tmp": tmp_path}
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()
        redis.Redis.from_url(REDIS_URL).delete(env["CELERY_TASK_DEFAULT_QUEUE"])


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
    _wait_until(lambda: (j := http.get(url).json())["status"] == "running" and 3 <= j["done"] + j["failed"]
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
    job = _wait_until(lambda: (j := http.get(url).json())["status"] in ("done", "failed") and j, 240,
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
