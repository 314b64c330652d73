"""Building the spark-submit command: lean settings, loopback for local masters, the shipped zip."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from spark.submit import REPO_ROOT, build_submission, launch, py_files_zip, stop
from tests.spark.processes import wait_gone
from tests.stack import wait_until


def conf(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, part in enumerate(command) if part == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_py_files_zip_ships_plain_python_and_the_engine_data_only(tmp_path: Path):
    names = set(zipfile.ZipFile(py_files_zip(tmp_path / "code.zip")).namelist())
    assert {"matching/__init__.py", "matching/core/__init__.py", "matching/core/loading.py",
            "matching/core/signals.py", "spark/__init__.py", "spark/compute.py", "spark/job.py"} <= names
    # The package data the engine reads travels too (an executor has nothing but this zip).
    assert {"matching/core/thresholds.json", "matching/core/cnn/weights/head.npz"} <= names
    assert not any("__pycache__" in name or name.endswith((".pyc", ".tmp")) for name in names)
    # Django code never travels to executors.
    assert not any(name.startswith(("catalog/", "matching/bulk/", "workers/")) or name == "matching/models.py"
                   for name in names)


def test_local_submission_is_lean_and_stays_on_loopback(tmp_path: Path):
    sub = build_submission(master="local[2]", job_args=["--source", "/x", "--work-dir", str(tmp_path)],
                           work_dir=tmp_path, extra_env={"IMGPROTECT_DATA_DIR": "/data"},
                           secret_env={"AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    c = conf(sub.command)
    assert sub.env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and not any("s3cr3t" in part for part in sub.command)
    assert "-XX:TieredStopAtLevel=1" in c["spark.driver.extraJavaOptions"]
    assert sub.command[sub.command.index("--master") + 1] == "local[2]"
    assert sub.command[sub.command.index("--driver-memory") + 1] == "1g"
    assert sub.command[sub.command.index("--py-files") + 1] == str(tmp_path / "imgprotect-py.zip")
    assert c["spark.ui.enabled"] == "false"
    assert c["spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version"] == "2"
    assert c["spark.driver.host"] == c["spark.driver.bindAddress"] == "127.0.0.1"
    assert sub.env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert c["spark.executorEnv.IMGPROTECT_DATA_DIR"] == sub.env["IMGPROTECT_DATA_DIR"] == "/data"
    assert Path(sub.env["JAVA_HOME"], "bin", "java").exists()
    assert sub.env["PYSPARK_PYTHON"] == sys.executable
    assert sub.command[-4:] == ["--source", "/x", "--work-dir", str(tmp_path)]
    assert sub.command[-5] == str(REPO_ROOT / "spark" / "job.py")


def test_cluster_submission_does_not_pin_loopback(tmp_path: Path):
    sub = build_submission(master="spark://spark-master:7077", job_args=[], work_dir=tmp_path,
                           executor_memory="4g")
    assert "spark.driver.host" not in conf(sub.command)
    assert sub.command[sub.command.index("--executor-memory") + 1] == "4g"


def test_stop_ends_the_whole_process_group(tmp_path: Path):
    """A spark-submit leaves a JVM, a Python driver and Python workers: stop() must end them all."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    from spark.submit import Submission

    proc = launch(Submission([sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path), tmp_path / "log")

    def group() -> list[str]:
        return subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()

    wait_until(lambda: len(group()) == 2, 30, "the script and its sleep child in the process group")
    stop(proc, grace=5)
    assert wait_gone(proc.pid) == []


def test_the_engine_reads_its_package_data_from_the_zip_alone(tmp_path: Path):
    """What an executor on a cluster node does: import the engine from the zip (no checkout on the
    path) and read the thresholds and the ranking head. Opening them through ``Path(__file__)``
    raised NotADirectoryError there."""
    code = py_files_zip(tmp_path / "code.zip")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import matching.core.matcher as m\n"
        "from matching.core.cnn.head import DEFAULT_HEAD_PATH, read_head\n"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "print(m.Thresholds().min_inliers, read_head().arrays['proj/kernel'].shape, DEFAULT_HEAD_PATH.is_file())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(code)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    from matching.core.matcher import Thresholds

    calibrated = json.loads((REPO_ROOT / "matching" / "core" / "thresholds.json").read_text())
    assert done.stdout.split()[0] == str(calibrated.get("thresholds", calibrated)["min_inliers"])
    assert done.stdout.split()[0] == str(Thresholds().min_inliers)
    assert "(1280, 256)" in done.stdout and done.stdout.split()[-1] == "True"
