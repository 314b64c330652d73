"""Bulk indexing throughput: Spark local[N] versus in-process, per core, hashes only and with the CNN.

    python -m bench.bulk --n 2000 [--spark-master local[2]] [--cnn | --no-cnn] [--dataset PATH]
        [--json out.json] [--keep]

Builds N images augmented from ``../shared/datasets`` (random crop, resize,
flip, JPEG quality) into a temporary folder, indexes them into a throwaway
organisation through both paths, and reports images/s per core. The
organisation, its files and the bulk work directory are removed afterwards.
Uses the project's Django settings and database, as ``manage.py`` does
(``DJANGO_SETTINGS_MODULE``, default ``imgprotect.settings``).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import django
from django.apps import apps

if not apps.ready:  # run as a script, not inside a Django process: set Django up as manage.py does
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgprotect.settings")
    django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from bench.crawl import build_images  # noqa: E402
from bench.procs import Sampler, proc_stats  # noqa: E402
from catalog import services as catalog_services  # noqa: E402
from catalog.models import Organisation, ProtectedImage  # noqa: E402
from matching.bulk import services  # noqa: E402
from spark.progress import read_progress  # noqa: E402

DATASETS = Path(settings.BASE_DIR).parent / "shared" / "datasets"


@dataclass
class Result:
    path: str
    signals: str
    images: int
    cores: int
    wall_s: float
    cpu_s: float  # CPU seconds of every process involved (Spark: JVM, driver, workers, and the loader)
    work_cpu_s: float  # CPU seconds inside the per-image work (Spark: summed over tasks, model building apart)
    compute_s: float | None = None  # Spark: first task to last task, wall
    startup_s: float | None = None
    load_s: float | None = None

    @property
    def per_core(self) -> float:
        """Images per second per core, from wall time (depends on what else the machine runs)."""
        return self.images / self.wall_s / self.cores

    @property
    def per_cpu_second(self) -> float:
        """Images per CPU-second, end to end: the per-core rate on a core of one's own."""
        return self.images / self.cpu_s

    @property
    def work_per_cpu_second(self) -> float:
        return self.images / self.work_cpu_s


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class SessionCPU(Sampler):
    """CPU seconds of every process in the sessions our children lead (spark-submit's JVM, Python driver and
    workers), sampled from /proc five times a second: getrusage misses workers whose parents are killed."""

    def sample(self) -> None:
        stats = proc_stats()
        leaders = {pid for pid, ppid, sid, _ in stats if ppid == os.getpid() and sid == pid}
        for pid, _, sid, ticks in stats:
            if sid in leaders:
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), ticks / self.tick)


def _in_process(org: Organisation, source: Path, signals: str) -> Result:
    started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    call_command("index_images", "--org", org.slug, "--collection", f"in-process {signals}", str(source),
                 stdout=io.StringIO(), stderr=io.StringIO())
    wall, cpu = time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu
    count = ProtectedImage.objects.filter(collection__organisation=org, collection__name=f"in-process {signals}").count()
    return Result("in-process (index_images)", signals, count, 1, wall, cpu, cpu)


def _compute_only(source: Path, signals: str, embedder: str, scratch: Path) -> Result:
    """The Spark tasks' own per-image code in this process, one core, no Spark and no database."""
    from spark.compute import ERROR_INDEX, JobOptions, load_embedder, process_partition
    from spark.sources import LocalSource

    entries = [(e.key, e.size) for e in LocalSource(source).list()]
    options = JobOptions(source=str(source), embed=signals != "hashes", embedder=embedder,
                         max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES, max_pixels=settings.IMGPROTECT_MAX_PIXELS,
                         store_root=f"file://{scratch}", store_prefix="images", features_prefix="features",
                         marks_prefix="marks")
    if options.embed:
        load_embedder(embedder)  # built once per worker in Spark too; not part of the per-image rate
    list(process_partition([], options))  # the same once-per-process warm-up as a Spark worker's
    started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    rows = sum(1 for row in process_partition(entries, options) if row[ERROR_INDEX] is None)
    cpu = _cpu(resource.RUSAGE_SELF) - cpu
    return Result("in-process, same per-image code (no Spark, no database)", signals, rows, 1,
                  time.perf_counter() - started, cpu, cpu)


def _spark(org: Organisation, source: Path, signals: str, master: str, cores: int, embedder: str) -> Result:
    collection = catalog_services.collection_create(organisation=org, name=f"spark {signals}")
    job = services.bulkjob_create(organisation=org, kind="index", source=str(source), collection=collection,
                                  embed=signals != "hashes", spark_master=master, trusted=True, start=False,
                                  extra_options={"embedder": embedder})
    sampler = SessionCPU()
    sampler.start()
    started, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    job = services.bulkjob_run(job_id=job.pk)
    wall = time.perf_counter() - started
    cpu = _cpu(resource.RUSAGE_SELF) - cpu + sampler.stop()
    if job is None or job.status != "done":
        raise RuntimeError(f"bulk job failed: {job.error if job else 'missing'}\n{job.log_tail if job else ''}")
    progress = read_progress(job.work_dir / "progress.json") or {}
    compute = progress["compute_finished"] - progress["compute_started"]
    startup = progress["compute_started"] - job.started.timestamp()
    load = job.finished.timestamp() - progress["compute_finished"]
    return Result(f"Spark {master}", signals, job.done, cores, wall, cpu, progress["task_cpu_seconds"], compute,
                  startup, load)


def cnn_available() -> str | None:
    """None when the embedder can be built here, else why not."""
    try:
        from matching.core.cnn.embedder import get_embedder

        get_embedder()
    except Exception as exc:  # noqa: BLE001 - any failure means "no CNN rows"
        return f"{type(exc).__name__}: {exc}"
    return None


def run(*, n: int, master: str = "local[2]", cnn: bool | None = None, dataset: Path = DATASETS,
        keep: bool = False) -> dict[str, Any]:
    cores = int(master[len("local["):-1]) if master.startswith("local[") and master[6:-1].isdigit() else os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="imgprotect-bench-"))
    org = catalog_services.organisation_create(slug=f"bench-{os.getpid()}-{int(time.time())}", name="benchmark")
    results: list[Result] = []
    notes: list[str] = []
    try:
        started = time.perf_counter()
        build_images(n, tmp / "images", dataset=dataset)
        notes.append(f"built {n} images in {time.perf_counter() - started:.1f} s")
        why = cnn_available() if cnn is not False else "not requested"
        kinds = [("hashes", "auto")]
        if why is None:
            kinds.append(("hashes+cnn", "auto"))
        elif cnn is not False:
            # The product embedder cannot be built here (no trained head yet): measure the CNN's cost
            # with the backbone alone, which is nearly all of it (the head is one small layer).
            notes.append(f"product embedder unavailable ({why}); CNN rows use the EfficientNet-Lite0 "
                         "backbone alone, and index_images (which needs the product embedder) is not measured "
                         "with the CNN")
            kinds.append(("hashes+cnn backbone", "backbone"))
        with override_settings(IMGPROTECT_BULK_WORK_DIR=tmp / "bulk"):
            for kind, embedder in kinds:
                with override_settings(IMGPROTECT_CNN_ENABLED=kind == "hashes+cnn"):
                    if embedder == "auto":
                        results.append(_in_process(org, tmp / "images", kind))
                    results.append(_compute_only(tmp / "images", kind, embedder, tmp / f"scratch-{len(results)}"))
                    results.append(_spark(org, tmp / "images", kind, master, cores, embedder))
    finally:
        for collection in list(org.collections.all()):
            catalog_services.collection_delete(collection=collection)
        org.delete()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"results": results, "notes": notes, "load_average": os.getloadavg(), "cpu_count": os.cpu_count()}


def table(report: dict[str, Any]) -> str:
    rows = ["| path | signals | images | cores | wall s | images/s/core (wall) | images per CPU-second, "
            "end to end | images per CPU-second, per-image work | Spark versus in-process, per core |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    full = {r.signals: r for r in report["results"] if r.path.startswith("in-process (")}
    bare = {r.signals: r for r in report["results"] if r.path.startswith("in-process, same")}
    for r in report["results"]:
        ratio = "—"
        if r.compute_s is not None:
            parts = []
            if r.signals in full:
                parts.append(f"end to end {r.per_cpu_second / full[r.signals].per_cpu_second:.0%} of index_images")
            if r.signals in bare:
                parts.append(f"per-image work {r.work_per_cpu_second / bare[r.signals].work_per_cpu_second:.0%} "
                             "of the same code in-process")
            ratio = "; ".join(parts) or "—"
        extra = (f" (JVM start and listing {r.startup_s:.1f}, tasks {r.compute_s:.1f}, load {r.load_s:.1f})"
                 if r.compute_s is not None else "")
        rows.append(f"| {r.path} | {r.signals} | {r.images} | {r.cores} | {r.wall_s:.1f}{extra} | {r.per_core:.1f} | "
                    f"{r.per_cpu_second:.1f} | {r.work_per_cpu_second:.1f} | {ratio} |")
    return "\n".join(rows)


def as_json(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "results": [{**asdict(r), "per_core": r.per_core, "per_cpu_second": r.per_cpu_second,
                                   "work_per_cpu_second": r.work_per_cpu_second} for r in report["results"]]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk",
        description="Index N augmented dataset images through Spark and in-process; print images/s per core.")
    parser.add_argument("--n", type=int, default=2000, help="images to build and index (default 2000)")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--cnn", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure with the CNN embedding (default: when the embedder loads)")
    parser.add_argument("--dataset", type=Path, default=DATASETS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary images")
    args = parser.parse_args(argv)
    report = run(n=args.n, master=args.spark_master, cnn=args.cnn, dataset=args.dataset, keep=args.keep)
    print(table(report))
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"note: {report['cpu_count']} CPUs, load average {report['load_average'][0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(as_json(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
