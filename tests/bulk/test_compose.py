"""docker/compose.yml runs bulk jobs on a standalone Spark cluster (Docker cannot run in the test
environment: this checks the file's structure and wiring, not a running stack)."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())


def test_a_spark_master_and_workers_from_the_service_image():
    services = _compose()["services"]
    master, worker = services["spark-master"], services["spark-worker"]
    for spark in (master, worker):
        # The same image as web and worker: the executors run the submitter's Python environment.
        assert spark["build"] == services["worker"]["build"] and spark["image"] == services["worker"]["image"]
        assert spark["command"][0].endswith("/pyspark/bin/spark-class")
        assert "imgdata:/data" in spark["volumes"]  # the shared work directories and media, same path
    assert master["command"][1:] == ["org.apache.spark.deploy.master.Master", "--host", "spark-master",
                                     "--port", "7077", "--webui-port", "8080"]
    assert master["depends_on"] == []  # no database for Spark daemons
    assert worker["command"][1] == "org.apache.spark.deploy.worker.Worker"
    assert worker["command"][-1] == "spark://spark-master:7077" and worker["deploy"]["replicas"] == 3
    assert worker["depends_on"]["spark-master"]["condition"] == "service_healthy"


def test_web_and_worker_submit_to_the_cluster():
    services = _compose()["services"]
    for name in ("web", "worker"):
        assert services[name]["environment"]["SPARK_MASTER"] == "spark://spark-master:7077"
        assert services[name]["environment"]["IMGPROTECT_DATA_DIR"] == "/data"
    assert services["worker"]["depends_on"]["spark-master"]["condition"] == "service_healthy"


def test_the_image_has_the_java_spark_needs():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "openjdk-17-jre-headless" in dockerfile
    assert "SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark" in dockerfile


def test_the_cluster_instructions_in_docs_match_the_file():
    doc = " ".join((ROOT / "docs" / "bulk.md").read_text().split())
    services = _compose()["services"]
    master, worker = services["spark-master"], services["spark-worker"]
    for spark in (master, worker):
        assert "spark-class " + " ".join(spark["command"][1:]) in doc
    assert worker["deploy"]["replicas"] == 3 and "**three replicas**" in doc
    assert "imgdata:/data" in worker["volumes"] and "the volume `imgdata` at `/data`" in doc
    assert f"SPARK_MASTER={services['worker']['environment']['SPARK_MASTER']}" in doc
    assert services["worker"]["environment"]["SPARK_EXECUTOR_MEMORY"] == "${SPARK_EXECUTOR_MEMORY:-3g}"
    assert "SPARK_EXECUTOR_MEMORY=${SPARK_EXECUTOR_MEMORY:-3g}" in doc
    for name in services:
        assert f"`{name}`" in doc, name
