"""Building and launching ``spark-submit`` for ``spark/job.py`` (no Django).

The driver always runs in client mode on the submitting machine, so its
progress file and log are local to the process that follows them. The code
executors need (``matching/core`` and ``spark/``, with the package data the
engine reads: thresholds, the ranking head) travels as a ``--py-files`` zip
built from this checkout at submission time, so a cluster always runs
the same code as the submitter; third-party packages (numpy, Pillow,
TensorFlow, ...) must be installed on the executors.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "SubmitError", "Submission", "build_submission", "launch", "py_files_zip", "stop"]

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_FILE = REPO_ROOT / "spark" / "job.py"
# Shipped to executors: the plain-Python packages the job imports. Never Django code.
_SHIPPED = ("matching/__init__.py", "matching/core", "spark")


class SubmitError(Exception):
    """spark-submit cannot be started here (no Java, no Spark)."""


@dataclass(frozen=True)
class Submission:
    command: list[str]
    env: dict[str, str]
    cwd: Path


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def _shipped_file(file: Path) -> bool:
    """Python files and the package data the engine reads (thresholds.json, the ranking head's
    head.npz, ...): executors import from the zip and read that data from it
    (matching/core/resources.py). Never caches or editor droppings."""
    return ("__pycache__" not in file.parts and file.is_file() and not file.name.startswith(".")
            and file.suffix not in (".pyc", ".pyo", ".tmp"))


def py_files_zip(dest: Path, root: Path = REPO_ROOT) -> Path:
    """Zip the shipped packages (code and package data, no caches) into ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in _SHIPPED:
            path = root / item
            files = [path] if path.is_file() else sorted(path.rglob("*"))
            for file in files:
                if _shipped_file(file):
                    zf.write(file, file.relative_to(root).as_posix())
    os.replace(tmp, dest)
    return dest


def spark_home() -> str:
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - pyspark is a dependency
        raise SubmitError("pyspark is not installed and SPARK_HOME is not set") from exc
    return str(Path(pyspark.__file__).resolve().parent)


def java_home() -> str:
    """JAVA_HOME, or the installation the ``java`` on PATH belongs to (Spark 4 needs Java 17 or 21)."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        for candidate in ("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/java-21-openjdk-amd64"):
            if Path(candidate, "bin", "java").exists():
                return candidate
        raise SubmitError("Java is not installed: Spark needs a Java 17 runtime (set JAVA_HOME)")
    return str(Path(java).resolve().parent.parent)


def build_submission(
    *,
    master: str,
    job_args: Sequence[str],
    work_dir: Path,
    driver_memory: str = "1g",
    executor_memory: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    files: Sequence[Path] = (),
) -> Submission:
    """The spark-submit command line and environment for one run of the job.

    ``extra_env`` reaches the driver and (as ``spark.executorEnv``) the executors;
    ``secret_env`` only the environment of the processes started here, never the
    command line or Spark's configuration, where anyone could read it. Executors on a
    cluster get credentials from their own environment or instance role.
    """
    home = spark_home()
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    zip_path = py_files_zip(work_dir / "imgprotect-py.zip")
    conf: dict[str, str] = {
        # Lean start-up: no web UI, few shuffle partitions (the job has no shuffle).
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.log.level": "WARN",
        # Each task commits its Parquet file when it finishes, so a killed run keeps finished partitions.
        "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "true",
        "spark.python.worker.reuse": "true",  # the CNN loads once per Python worker, not per task
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        # One Python worker per core: numeric libraries must not start their own thread pools.
        "spark.executorEnv.OMP_NUM_THREADS": "1",
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
        # The JVM only moves rows (the work is in Python): the C1 compiler alone and the serial collector
        # halve its CPU time (13.6 -> 7.1 CPU-s over 2,000 images, measured), which the Python workers get back.
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
    env = dict(os.environ)
    env.update({"SPARK_HOME": home, "JAVA_HOME": java_home(), "PYSPARK_PYTHON": python,
                "PYSPARK_DRIVER_PYTHON": python, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2"})
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the job never loads Django
    if is_local_master(master):
        # Driver and executors are this machine: stay on loopback, never on a public interface.
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for name, value in (extra_env or {}).items():
        env[name] = value
        conf[f"spark.executorEnv.{name}"] = value
    env.update(secret_env or {})
    conf.update(extra_conf or {})
    command = [str(Path(home) / "bin" / "spark-submit"), "--master", master, "--deploy-mode", "client",
               "--driver-memory", driver_memory, "--py-files", str(zip_path)]
    if executor_memory:
        command += ["--executor-memory", executor_memory]
    if files:
        command += ["--files", ",".join(str(f) for f in files)]
    for name, value in conf.items():
        command += ["--conf", f"{name}={value}"]
    command += [str(JOB_FILE), *job_args]
    return Submission(command=command, env=env, cwd=REPO_ROOT)


def _die_with_parent() -> None:
    """In the child before exec: be killed when the process that started us dies (Linux).

    A worker killed with SIGKILL then takes its spark-submit with it instead
    of leaving a driver that nobody follows.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not Linux
        pass


def launch(submission: Submission, log_path: Path) -> subprocess.Popen[bytes]:
    """Start spark-submit in its own process group, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            submission.command, env=submission.env, cwd=submission.cwd, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """Stop spark-submit and everything it started (JVM, Python driver, Python workers)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:  # the group outlives its leader when children linger; none may stay behind
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.wait()
