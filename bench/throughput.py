"""Throughput of indexing and scans, in images per CPU-second (issue 13 item 5; docs/benchmarks.md §11).

    python -m bench.throughput [--n 1000] [--refs 120] [--master local[2]] [--modes index,never,auto]
        [--no-in-process] [--no-spark] [--dataset PATH] [--json out.json] [--keep]

No Django and no database: the executors' own per-image code (``spark.compute.process_partition``)
on a synthetic crawl (``bench.crawl``: ``--n`` JPEGs of 256-640 px augmented from the dataset),
against a protected set of ``--refs`` dataset pictures (half photos, half logos) indexed by the same
code and written as a scan's reference snapshot (``spark.references.write_snapshot``):

- ``index``: indexing with the CNN, as an index job's executors do it (decode, hashes, embedding in
  batches, the stored copy and the local features written to a ``file://`` store);
- ``never``: a scan without the partial-copy pass (digests, hash variants, the CNN on the whole
  picture, verification); ``auto``: the whole cascade as scans run it (the partial-copy pass for
  every picture the cheaper passes found no copy in, which is nearly every crawled picture);
  ``always``: the partial-copy pass for every picture.

Each mode runs in this process (one core: ``OMP_NUM_THREADS=1`` and the CNN's one thread, as an
executor; model building and the first lazy imports apart, as ``bench.bulk`` counts them) and, with
Spark, as tasks of a ``--master`` job: the tasks' own CPU (the per-image work; ``process_partition``'s
counters) and, end to end, the CPU of every process (the JVM, the driver, the Python workers: sampled
from /proc), the wall time, and the peak resident memory of each Python worker and of the JVM.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.crawl import DATASETS, build_images, dataset_sources
from bench.procs import Sampler, proc_stats

REPO = Path(__file__).resolve().parents[1]
MODES = ("index", "never", "auto", "always")
PARTITION = 200  # images per Spark task


@dataclass
class Result:
    mode: str
    path: str  # "in-process" or the Spark master
    images: int
    failed: int
    work_cpu_s: float  # CPU seconds of the per-image work
    wall_s: float
    cpu_s: float | None = None  # Spark: every process, end to end
    worker_peak_rss_mib: list[float] = field(default_factory=list)  # Spark: each Python worker's peak
    jvm_peak_rss_mib: float | None = None

    @property
    def work_rate(self) -> float:
        return self.images / self.work_cpu_s if self.work_cpu_s else 0.0

    @property
    def end_to_end_rate(self) -> float | None:
        return self.images / self.cpu_s if self.cpu_s else None


class Descendants(Sampler):
    """CPU seconds and peak resident memory of every process below this one, sampled from /proc
    five times a second (a Python worker's CPU is read before it exits; its VmHWM is its peak)."""

    def __init__(self) -> None:
        super().__init__()
        self.peak: dict[int, tuple[str, float]] = {}  # pid -> (command, MiB)

    def sample(self) -> None:
        stats = proc_stats()
        parents = {pid: ppid for pid, ppid, _, _ in stats}
        ticks = {pid: used / self.tick for pid, _, _, used in stats}
        me, below = os.getpid(), set()
        for pid in parents:
            chain, p = [], pid
            while p in parents and p not in below and p != me and p > 1:
                chain.append(p)
                p = parents[p]
            if p == me or p in below:
                below.update(chain)
        for pid in below:
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), ticks[pid])
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            hwm = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), "0")
            self.peak[pid] = (command, max(self.peak.get(pid, ("", 0.0))[1], int(hwm) / 1024))


def _entries(root: Path) -> list[tuple[str, int]]:
    from spark.sources import LocalSource

    return [(e.key, e.size) for e in LocalSource(root).list()]


def _options(source: Path, store: Path, mode: str, references: Path | None, embedder: str = "auto") -> Any:
    from spark.compute import JobOptions

    if mode == "index":
        return JobOptions(source=str(source), embed=True, embedder=embedder, store_root=f"file://{store}",
                          store_prefix="images", features_prefix="features", marks_prefix="marks")
    return JobOptions(source=str(source), kind="scan", embed=True, embedder=embedder, store_root=f"file://{store}",
                      references=str(references), partial=mode)


def pick_references(count: int, dest: Path, *, seed: int = 0, dataset: Path = DATASETS) -> Path:
    """``count`` dataset pictures, half photos and half logos, copied into ``dest``."""
    sources = dataset_sources(dataset)
    photos = [p for p in sources if p.parent.parent.name == "photos"]
    logos = [p for p in sources if p.parent.name == "logos"]
    rng = random.Random(seed)
    picked = rng.sample(photos, min(len(photos), count // 2))
    picked += rng.sample(logos, count - len(picked))
    dest.mkdir(parents=True)
    for i, path in enumerate(picked):
        shutil.copyfile(path, dest / f"ref-{i:05d}{path.suffix}")
    return dest


def write_references(refs: Path, store: Path, dest: Path, *, embedder: str = "auto") -> Path:
    """Index ``refs`` with the executors' code (``embedder``: ``JobOptions.embedder``) and write the
    scan snapshot of them into ``dest``; ids 1, 2, ... in the order of the keys."""
    import numpy as np

    from matching.core.hamming import pdq_words
    from matching.core.hashindex import make_hash_index
    from matching.core.matcher import Indexes, Thresholds
    from matching.core.signals import PDQ_MIN_QUALITY
    from matching.core.vectorindex import VectorIndex
    from spark.compute import FIELDS, process_partition
    from spark.references import write_snapshot

    names = [name for name, _ in FIELDS]
    rows = [dict(zip(names, out, strict=True)) for out in process_partition(sorted(_entries(refs)),
                                                                     _options(refs, store, "index", None, embedder))]
    rows = [r for r in rows if r["error_code"] is None]
    ids = np.arange(1, len(rows) + 1, dtype=np.int64)
    good = [(i, r) for i, r in zip(ids, rows, strict=True) if r["pdq_quality"] >= PDQ_MIN_QUALITY]
    indexes = Indexes(
        phash=make_hash_index(1, codes=np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64).reshape(-1, 1),
                              ids=ids),
        pdq=make_hash_index(4, codes=pdq_words([r["pdq"] for _, r in good]),
                            ids=np.array([i for i, _ in good], dtype=np.int64)),
        vectors=VectorIndex.build(*_with_mark_views(ids, rows)))
    records = [{"id": int(i), "sha256_bytes": r["sha256_bytes"], "sha256_pixels": r["sha256_pixels"],
                "phash": int(r["phash"], 16), "pdq": r["pdq"] if r["pdq_quality"] >= PDQ_MIN_QUALITY else None,
                "pdq_quality": r["pdq_quality"], "phash_max": None, "file": r["stored_name"],
                "features": r["features_name"], "mark": r["mark_name"],
                "mark_info": json.loads(r["mark_info"]) if r["mark_info"] else None}
               for i, r in zip(ids, rows, strict=True)]
    models = {r["embedding_model"] for r in rows if r["embedding_model"]}
    return write_snapshot(dest, rows=records, indexes=indexes, thresholds=Thresholds.load(),
                          embedding_model=models.pop() if len(models) == 1 else None)


def _with_mark_views(ids: Any, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    """The pictures' ids and embeddings, followed by their marks' views: the vector index a scan's
    snapshot holds (matching/index_registry.py), so that scans look for the logos' marks as checks do."""
    import numpy as np

    from matching.core.marks import with_mark_views

    vectors = np.array([r["embedding"] for r in rows], dtype=np.float32)
    return with_mark_views(np.asarray(ids, dtype=np.int64), vectors, (
        (int(i), np.asarray(r["mark_embeddings"], dtype=np.float32).reshape(-1, vectors.shape[1]))
        for i, r in zip(ids, rows, strict=True) if r["mark_embeddings"]))


def in_process(mode: str, crawl: Path, store: Path, references: Path | None) -> Result:
    """The per-image work of ``mode`` on the crawl in this process, warm-up apart."""
    from spark.compute import ERROR_INDEX, process_partition

    options = _options(crawl, store, mode, references)
    entries = _entries(crawl)
    list(process_partition(entries[:4], options))  # models, snapshot and lazy imports, as a worker's first task
    started, cpu = time.perf_counter(), time.process_time()
    outs = list(process_partition(entries, options))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    failed = sum(1 for out in outs if out[ERROR_INDEX] is not None)
    return Result(mode, "in-process", len(outs) - failed, failed, cpu, wall)


def spark_context(master: str) -> Any:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ["OMP_NUM_THREADS"] = "1"
    from pyspark import SparkConf, SparkContext

    conf = (SparkConf().setMaster(master).setAppName("imgprotect-throughput")
            .set("spark.ui.enabled", "false").set("spark.executorEnv.OMP_NUM_THREADS", "1")
            .set("spark.python.worker.reuse", "true"))
    return SparkContext(conf=conf)


def on_spark(sc: Any, mode: str, crawl: Path, store: Path, references: Path | None) -> Result:
    """The same work as tasks of a Spark job; ``sc``'s master decides the cores."""
    from spark.compute import ERROR_INDEX, partitions_for, process_partition

    options = _options(crawl, store, mode, references)
    entries = _entries(crawl)
    counters = (sc.accumulator(0), sc.accumulator(0), sc.accumulator(0.0), sc.accumulator(0.0))
    sampler = Descendants()
    sampler.start()
    started, own = time.perf_counter(), time.process_time()
    partitions = max(2 * sc.defaultParallelism, partitions_for(len(entries), PARTITION))
    outs = (sc.parallelize(entries, partitions)
            .mapPartitions(lambda it: process_partition(it, options, counters))
            .map(lambda out: out[ERROR_INDEX] is None).collect())
    wall = time.perf_counter() - started
    cpu = sampler.stop() + time.process_time() - own
    programs = [(Path(command.split(" ")[0]).name, mib) for command, mib in sampler.peak.values()]
    workers = sorted((mib for program, mib in programs if program.startswith("python")), reverse=True)
    jvm = max((mib for program, mib in programs if program == "java"), default=None)
    ok = sum(outs)
    return Result(mode, sc.master, ok, len(outs) - ok, counters[2].value, wall, cpu, [round(w) for w in workers],
                  None if jvm is None else round(jvm))


def table(results: Sequence[Result]) -> str:
    names = {"index": "indexing with the CNN", "never": "scan, no partial-copy pass",
             "auto": "scan, whole cascade (partial-copy pass when nothing else found a copy)",
             "always": "scan, partial-copy pass for every picture"}
    base = {r.mode: r for r in results if r.path == "in-process"}
    rows = ["| work | path | images (failed) | wall s | images per CPU-second, per-image work | "
            "Spark / in-process | images per CPU-second, end to end | peak RSS MiB: Python workers; JVM |",
            "|---|---|--:|--:|--:|--:|--:|---|"]
    for r in results:
        ratio = f"{r.work_rate / base[r.mode].work_rate:.0%}" if r.path != "in-process" and r.mode in base else "—"
        e2e = f"{r.end_to_end_rate:.1f}" if r.end_to_end_rate else "—"
        peaks = (f"{', '.join(str(int(w)) for w in r.worker_peak_rss_mib)}; {r.jvm_peak_rss_mib}"
                 if r.worker_peak_rss_mib else "—")
        rows.append(f"| {names[r.mode]} | {r.path} | {r.images} ({r.failed}) | {r.wall_s:.1f} | {r.work_rate:.1f} | "
                    f"{ratio} | {e2e} | {peaks} |")
    return "\n".join(rows)


def run(*, n: int, refs: int, master: str | None, modes: Sequence[str], in_proc: bool,
        dataset: Path = DATASETS, keep: bool = False, log: Any = print) -> dict[str, Any]:
    os.environ["OMP_NUM_THREADS"] = "1"  # as spark/submit.py sets for executors; before FAISS loads
    tmp = Path(tempfile.mkdtemp(prefix="imgprotect-throughput-"))
    results: list[Result] = []
    notes: list[str] = []
    try:
        started = time.perf_counter()
        build_images(n, tmp / "crawl", dataset=dataset)
        notes.append(f"built {n} crawl images in {time.perf_counter() - started:.1f} s")
        references = None
        if any(m != "index" for m in modes):
            pick_references(refs, tmp / "refs", dataset=dataset)
            references = write_references(tmp / "refs", tmp / "store", tmp / "snapshot")
        for mode in modes if in_proc else ():
            results.append(in_process(mode, tmp / "crawl", tmp / f"store-{mode}" if mode == "index" else tmp / "store",
                                      references))
            log(table(results[-1:]))
        if master:
            sc = spark_context(master)
            try:
                for mode in modes:
                    results.append(on_spark(sc, mode, tmp / "crawl", tmp / f"spark-{mode}" if mode == "index"
                                            else tmp / "store", references))
                    log(table(results[-1:]))
            finally:
                sc.stop()
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    notes.append(f"this process's peak RSS {self_peak:.0f} MiB; {os.cpu_count()} CPUs, "
                 f"load average {os.getloadavg()[0]:.2f} at the end")
    return {"n": n, "refs": refs, "results": results, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="crawl images (default 1000)")
    parser.add_argument("--refs", type=int, default=120, help="protected pictures (default 120)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("--modes", default="index,never,auto", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--dataset", type=Path, default=DATASETS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    report = run(n=args.n, refs=args.refs, master=None if args.no_spark else args.master, modes=modes,
                 in_proc=not args.no_in_process, dataset=args.dataset, keep=args.keep,
                 log=lambda text: print(text, file=sys.stderr, flush=True))
    print(table(report["results"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({**report, "results": [
            {**asdict(r), "work_rate": r.work_rate, "end_to_end_rate": r.end_to_end_rate}
            for r in report["results"]]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
