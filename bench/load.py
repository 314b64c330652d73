"""Load benchmark: concurrent checks for a fixed time; answered checks per second, latency, errors and
peak memory per process (docs/benchmarks.md, "Load").

    python -m bench.load --seconds 60 --concurrency 6             # starts the service itself
    python -m bench.load --url http://host:8000 --api-key KEY     # a running service

Each client sends one suspect at a time with ``POST /api/v1/checks/?wait=30`` (the documented way to
get the answer in one request) and counts it answered when the reply is 200 with status ``done``;
any other reply or a connection error is an error. Suspects are resized, re-encoded copies of four
protected images from scikit-image (which the benchmark uploads into a collection of its own) and
unrelated photos, so checks do real work: whole-frame copies, and the partial-copy pass in the
background for the unrelated ones.

Started by itself it runs the production shape on loopback (``--stack redis``: a fresh PostgreSQL
database, Redis as the broker, gunicorn and a prefork Celery worker, as docker/compose.yml) when
PostgreSQL and Redis answer on 127.0.0.1, otherwise the embedded default (``--stack embedded``:
SQLite, tasks in the web process). The output says which. Peak memory (VmHWM of
/proc/<pid>/status) is reported for the processes it started.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROTECTED = ["chelsea", "coffee", "astronaut", "rocket"]
UNRELATED = ["horse", "camera", "page"]
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("IMGPROTECT_BENCH_PGUSER", "postgres")}
REDIS_URL = os.environ.get("IMGPROTECT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _photo(name: str) -> Image.Image:
    import numpy as np
    import skimage.data
    from PIL import Image

    pixels = getattr(skimage.data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels > 0).astype(np.uint8) * 255
    return Image.fromarray(pixels).convert("RGB")


def _encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def suspects(count: int = 60) -> list[bytes]:
    """Distinct suspects: copies of the protected photos at several sizes and qualities, and unrelated ones."""
    from PIL import Image

    names = [*PROTECTED, *UNRELATED]
    out = []
    for i in range(count):
        img = _photo(names[i % len(names)])
        scale = 0.5 + 0.05 * (i % 9)
        small = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        out.append(_encode(small, "JPEG", quality=55 + i % 35))
    return out


# --- the service under test -------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    api_key: str
    shape: str  # what runs behind the URL, in words
    pids: dict[str, int] = field(default_factory=dict)  # role -> the parent pid of a process tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _services_up() -> bool:
    try:
        import psycopg2
        import redis

        psycopg2.connect(dbname="postgres", connect_timeout=3, **PG).close()
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means they are not there
        return False


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # pool processes left behind, if any
        except ProcessLookupError:
            pass


@contextmanager
def started_service(stack: str, *, web_workers: int, worker_concurrency: int, cnn: bool,
                    keep: bool) -> Iterator[Service]:
    """Start the service on loopback; tear everything down after (``keep``: leave the logs)."""
    work = Path(tempfile.mkdtemp(prefix="imgprotect-load-"))
    port = _free_port()
    env = {**os.environ, "IMGPROTECT_DATA_DIR": str(work / "data"), "SITE_URL": f"http://127.0.0.1:{port}",
           "IMGPROTECT_CNN_ENABLED": "true" if cnn else "false", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_TASK_DEFAULT_QUEUE"):
        env.pop(name, None)
    dbname = f"imgprotect_load_{uuid.uuid4().hex[:8]}"
    if stack == "redis":
        import psycopg2

        admin = psycopg2.connect(dbname="postgres", **PG)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{dbname}"')
        env.update(DATABASE_URL=f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}",
                   CELERY_BROKER_URL=REDIS_URL, CELERY_TASK_DEFAULT_QUEUE=f"load-{dbname}")
    manage = [sys.executable, str(ROOT / "manage.py")]
    try:
        with ExitStack() as procs:
            subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
            key = subprocess.run([*manage, "create_api_key", "--org", "load", "--create-org", "--role", "owner"],
                                 env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
            web = procs.enter_context(_process(
                [str(BIN / "gunicorn"), "imgprotect.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(web_workers),
                 "--timeout", "60"], env, work / "web.log"))
            pids = {"web": web.pid}
            if stack == "redis":
                worker = procs.enter_context(_process(
                    [str(BIN / "celery"), "-A", "imgprotect", "worker", "-l", "info", "--pool", "prefork",
                     "-c", str(worker_concurrency), "-Q", env["CELERY_TASK_DEFAULT_QUEUE"], "-n", f"{dbname}@%h",
                     "--without-gossip", "--without-mingle"], env, work / "worker.log"))
                pids["worker"] = worker.pid
                shape = (f"PostgreSQL + Redis + gunicorn ({web_workers} sync workers) + Celery prefork worker "
                         f"(concurrency {worker_concurrency})")
            else:
                shape = f"embedded default: SQLite, tasks in-process in gunicorn ({web_workers} sync workers)"
            shape += f", CNN {'on' if cnn else 'off'}"
            _wait(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok, 60, "gunicorn")
            yield Service(url=f"http://127.0.0.1:{port}", api_key=key, shape=shape, pids=pids)
    finally:
        if stack == "redis":
            import redis

            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            admin.close()
            redis.Redis.from_url(REDIS_URL).delete(f"load-{dbname}")
        if keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def index_protected(http: requests.Session, url: str) -> None:
    name = f"load-bench-{uuid.uuid4().hex[:6]}"
    collection = http.post(f"{url}/api/v1/collections/", json={"name": name}, timeout=30)
    collection.raise_for_status()
    ids = []
    for photo in PROTECTED:
        response = http.post(f"{url}/api/v1/images/", data={"collection": collection.json()["id"]},
                             files={"file": (f"{photo}.png", _encode(_photo(photo), "PNG"), "image/png")}, timeout=120)
        response.raise_for_status()
        ids.append(response.json()["id"])

    def indexed() -> bool:
        return all(http.get(f"{url}/api/v1/images/{i}/", timeout=30).json()["status"] == "indexed" for i in ids)

    _wait(indexed, 300, "the protected images to be indexed")


# --- memory -------------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def peak_memory(pids: dict[str, int]) -> list[dict[str, object]]:
    """VmHWM (peak resident set) of every process of each role's tree, in MiB."""
    rows = []
    for role, root in pids.items():
        for pid in _tree(root):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
            if kib is not None:
                rows.append({"role": role, "pid": pid, "parent": pid == root, "peak_mib": round(kib / 1024, 1)})
    return rows


# --- the load -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(url: str, api_key: str, images: list[bytes], offset: int, stop: float, tally: Tally,
            max_checks: int | None = None) -> None:
    http = requests.Session()
    http.headers["Authorization"] = f"Api-Key {api_key}"
    i, sent = offset, 0
    while time.monotonic() < stop and (max_checks is None or sent < max_checks):
        data = images[i % len(images)]
        i, sent = i + 1, sent + 1
        t0 = time.perf_counter()
        try:
            response = http.post(f"{url}/api/v1/checks/?wait=30", files={"file": ("s.jpg", data, "image/jpeg")},
                                 timeout=90)
            ms = (time.perf_counter() - t0) * 1000
            ok = response.status_code == 200 and response.json().get("status") == "done"
            error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            ms, error = (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}"
        with tally.lock:
            if error is None:
                tally.latencies_ms.append(ms)
            else:
                tally.errors.append(error)


def run_load(url: str, api_key: str, *, seconds: float, concurrency: int, warmup: int) -> dict[str, Any]:
    images = suspects()
    if warmup:  # first checks load models in each process; not part of the figures
        warm = Tally()
        threads = [threading.Thread(target=_client, args=(url, api_key, images, n * 7, time.monotonic() + 600,
                                                          warm, warmup)) for n in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    tally = Tally()
    start = time.monotonic()
    stop = start + seconds
    threads = [threading.Thread(target=_client, args=(url, api_key, images, n * 11, stop, tally))
               for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start  # includes the last requests, sent before stop
    lat = sorted(tally.latencies_ms)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q / 100 * len(lat)))], 1) if lat else None

    return {
        "seconds": round(elapsed, 1), "concurrency": concurrency, "answered": len(lat),
        "answered_per_s": round(len(lat) / elapsed, 2), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None, "errors": len(tally.errors),
        "error_samples": tally.errors[:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running service (else one is started on loopback)")
    parser.add_argument("--api-key", help="an API key of that service (with --url)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="checks per client before timing starts")
    parser.add_argument("--stack", choices=["auto", "redis", "embedded"], default="auto",
                        help="what to start without --url (auto: redis when PostgreSQL and Redis answer)")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn workers (docker/Dockerfile: 3)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery pool (docker/compose.yml: 2)")
    parser.add_argument("--no-cnn", action="store_true", help="start the service with IMGPROTECT_CNN_ENABLED=false")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.url and not args.api_key:
        parser.error("--url needs --api-key")

    with ExitStack() as stack:
        if args.url:
            service = Service(url=args.url.rstrip("/"), api_key=args.api_key, shape=f"the service at {args.url}")
        else:
            kind = args.stack if args.stack != "auto" else ("redis" if _services_up() else "embedded")
            service = stack.enter_context(started_service(
                kind, web_workers=args.web_workers, worker_concurrency=args.worker_concurrency, cnn=not args.no_cnn,
                keep=args.keep_logs))
        print(f"service: {service.shape}", flush=True)
        http = requests.Session()
        http.headers["Authorization"] = f"Api-Key {service.api_key}"
        index_protected(http, service.url)
        result = run_load(service.url, service.api_key, seconds=args.seconds, concurrency=args.concurrency,
                          warmup=args.warmup)
        result["service"] = service.shape
        result["memory"] = peak_memory(service.pids)
    print(f"{result['answered']} checks answered in {result['seconds']} s by {result['concurrency']} clients: "
          f"{result['answered_per_s']} per s; latency p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
          f"p99 {result['p99_ms']} ms; errors {result['errors']}")
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    if result["memory"]:
        print("peak memory (VmHWM):")
        for row in result["memory"]:
            kind = "parent" if row["parent"] else "child"
            print(f"  {row['role']:<6} {kind:<6} pid {row['pid']:<7} {row['peak_mib']:>8.1f} MiB")
    else:
        print("peak memory: not measured (the service was not started by this command)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
