"""Kill spark-submit half-way, rerun: the job completes with every image exactly once.

The slow stand-in embedder (a production seam: the job's embedder is a
setting) keeps each partition busy long enough to kill the driver after some
partitions committed and before the others.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from catalog.models import ProtectedImage
from matching.bulk import services
from matching.bulk.models import BulkJob, BulkJobError
from spark.progress import read_progress
from tests.bulk.folders import write
from tests.factories import CollectionFactory
from tests.images import PHOTOS, resized_jpeg, truncated_jpeg
from tests.spark.processes import wait_gone

pytestmark = pytest.mark.django_db


def crawl(root: Path) -> dict[str, bytes]:
    files = {f"{name}/{name} at {scale}.jpg": resized_jpeg(name, scale, 80)
             for name in PHOTOS for scale in (0.5, 0.7)}
    files["broken one.jpg"] = truncated_jpeg()
    write(root, files)
    return files


def test_killed_driver_then_rerun_indexes_each_image_exactly_once(org, tmp_path: Path, monkeypatch):
    files = crawl(tmp_path / "src")
    good = {k for k in files if k != "broken one.jpg"}
    collection = CollectionFactory(organisation=org)
    monkeypatch.setenv("FAKE_EMBEDDER_DELAY", "1.0")
    monkeypatch.setenv("FAKE_EMBEDDER_LOG", str(tmp_path / "embedder.log"))
    job = services.bulkjob_create(
        organisation=org, kind="index", source=str(tmp_path / "src"), collection=collection, embed=True,
        trusted=True, start=False,
        extra_options={"embedder": "tests.spark.fake_embedder:FakeEmbedder", "partition_size": 3},
    )
    killed: dict[str, int] = {}

    def kill_half_way(current: BulkJob) -> None:
        finished = current.done + current.failed
        if not killed and current.status == "running" and current.total and 3 <= finished < current.total:
            os.kill(current.driver_pid, signal.SIGKILL)  # the JVM spark-submit started, as an operator would
            killed.update(pid=current.driver_pid, finished=finished)

    job = services.bulkjob_run(job_id=job.pk, on_progress=kill_half_way)
    assert killed, "the job finished before it could be killed"
    assert job.status == "failed" and job.error and job.finished is not None
    assert "imgprotect-bulk:" in job.log_tail  # the log is kept for the operator
    assert ProtectedImage.objects.count() == 0  # nothing loaded from a run that did not finish
    assert wait_gone(killed["pid"]) == []  # no Python driver or worker left behind

    job = services.bulkjob_resume(job=job, start=False)
    job = services.bulkjob_run(job_id=job.pk)
    assert job.status == "done", job.error
    progress = read_progress(job.work_dir / "progress.json")
    assert progress is not None and progress["attempt"] == 2
    reused = progress["reused_ok"] + progress["reused_failed"]
    assert reused >= 3 and progress["processed"] == len(files) - reused  # only the missing keys were computed
    keys = list(ProtectedImage.objects.filter(collection=collection).values_list("key", flat=True))
    assert sorted(keys) == sorted(good)  # each image exactly once
    assert (job.total, job.done, job.failed) == (len(files), len(good), 1)
    assert list(BulkJobError.objects.filter(job=job).values_list("key", "code")) == [("broken one.jpg",
                                                                                      "corrupt_image")]
    # The stand-in embedder's 8-d vector, in the embedding column as float16 bytes, not in the signals JSON.
    rows = ProtectedImage.objects.filter(collection=collection).values_list("embedding", "signals")
    assert all(v is not None and len(v) == 16 and "embedding" not in s for v, s in rows)
    # The model was built once per Python worker in each run, whatever the number of partitions.
    events = [json.loads(line) for line in (tmp_path / "embedder.log").read_text().splitlines()]
    loads = [e["pid"] for e in events if e["event"] == "load"]
    assert len(loads) == len(set(loads)) <= 4
