"""A real standalone Spark cluster on loopback: a master and three workers, the CNN on.

Executors on a cluster have none of the checkout: only what spark/submit.py
ships. This is the run that catches what local[N] hides (there the driver's
own checkout is on every Python worker's path): package data read from the
code zip (the ranking head, the thresholds), the CNN's weights found or
converted per node, and a scan that runs the whole matching cascade with
nothing but the reference snapshot (spark/references.py).
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from catalog.models import ProtectedImage
from matching.bulk.models import BulkJob
from matching.core.marks import MARK_VIEWS
from matching.encodings import embedding_from_bytes, embeddings_from_bytes
from matching.models import Match
from spark.submit import java_home, spark_home
from tests.bulk.folders import cropped_turned_jpeg, write
from tests.images import encode, logo_in_scene_jpeg, photo_png, resized_jpeg, transparent_logo
from tests.stack import wait_until

pytestmark = pytest.mark.django_db

WORKERS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen([str(Path(spark_home()) / "bin" / "spark-class"), *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``spark://127.0.0.1:PORT`` of a master with three 1-core workers, all torn down afterwards."""
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": spark_home(), "JAVA_HOME": java_home(), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(logs), "SPARK_WORKER_DIR": str(logs / "work"),
           # Small daemons: the master and workers only hand out executors.
           "SPARK_DAEMON_MEMORY": "256m"}
    env.pop("PYTHONPATH", None)  # executors must live on what the job ships, as on a real node
    port, ui = _free_port(), _free_port()
    processes = [_start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui)], logs / "master.log", env)]
    try:
        master = f"spark://127.0.0.1:{port}"
        wait_until(lambda: _alive_workers(ui) == 0 and b"I have been elected leader" in (logs / "master.log").read_bytes(),
                   60, "the Spark master to start")
        for n in range(WORKERS):
            processes.append(_start(
                ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(_free_port()),
                 "--webui-port", str(_free_port()), "--cores", "1", "--memory", "1500m",
                 "--work-dir", str(logs / f"work-{n}"), master], logs / f"worker-{n}.log", env))
        wait_until(lambda: _alive_workers(ui) == WORKERS, 90, f"{WORKERS} workers to register")
        yield master
    finally:
        for process in reversed(processes):
            _stop(process)


def test_index_and_scan_on_a_standalone_cluster_with_the_real_cnn(cluster: str, org, settings, tmp_path: Path,
                                                                   monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # the driver, too, stays on loopback
    settings.IMGPROTECT_CNN_ENABLED = True
    settings.SPARK_EXECUTOR_MEMORY = "1g"
    src = write(tmp_path / "protected", {**{f"{name}.png": photo_png(name) for name in ("coffee", "chelsea", "rocket")},
                                         "acme.png": encode(transparent_logo(), "PNG")})
    out = io.StringIO()
    call_command("index_images", "--org", org.slug, "--collection", "Brand",
                 "--spark-master", cluster, str(src), stdout=out, stderr=io.StringIO())
    index_job = BulkJob.objects.get(kind="index")
    assert index_job.status == "done", f"{index_job.error}\n{index_job.log_tail}"
    images = ProtectedImage.objects.filter(organisation=org)
    # The executors ran the real CNN (256 floats, the ranking head's output) and stored local features.
    assert images.count() == 4 and all(i.embedding and i.features for i in images)
    assert {embedding_from_bytes(i.embedding).shape for i in images} == {(256,)}
    # The logo's mark was keyed out on an executor, stored where every node reads, and its views embedded.
    acme = images.get(key="acme.png")
    assert acme.mark.name and acme.mark_info["source"] == "alpha" and not images.get(key="coffee.png").mark
    assert embeddings_from_bytes(acme.mark_embeddings, 256).shape == (MARK_VIEWS, 256)
    with acme.mark.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert index_job.spark_app_id.startswith("app-")  # a standalone cluster's application, not local-*

    crawl = write(tmp_path / "crawl", {"copies/coffee turned.jpg": cropped_turned_jpeg("coffee"),
                                       "copies/acme on a wall.jpg": logo_in_scene_jpeg()[0],
                                       "unrelated/horse.jpg": resized_jpeg("horse", 0.8),
                                       "unrelated/astronaut.jpg": resized_jpeg("astronaut", 0.8)})
    with django_capture_on_commit_callbacks(execute=True):
        call_command("scan_images", "--org", org.slug, "--spark-master", cluster, str(crawl),
                     stdout=io.StringIO(), stderr=io.StringIO())
    scan = BulkJob.objects.get(kind="scan")
    assert (scan.status, scan.done, scan.failed, scan.matched) == ("done", 4, 0, 2), f"{scan.error}\n{scan.log_tail}"
    found = {m.suspect_key: m for m in Match.objects.select_related("protected_image")}
    assert set(found) == {f"{crawl}/copies/coffee turned.jpg", f"{crawl}/copies/acme on a wall.jpg"}
    mark = found[f"{crawl}/copies/acme on a wall.jpg"]  # the bulk-indexed logo's mark, found alone in a photo
    assert mark.protected_image.key == "acme.png" and mark.edit_report["description"].startswith("the mark, at ")
    match = found[f"{crawl}/copies/coffee turned.jpg"]
    assert (match.suspect_key, match.protected_image.key) == (f"{crawl}/copies/coffee turned.jpg", "coffee.png")
    assert match.verdict == "modified_copy" and match.signal_scores["inliers"] >= 8
    assert len(match.region["query"]) >= 3 and abs(abs(match.edit_report["rotation_deg"]) - 7) < 2
    with match.evidence.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
