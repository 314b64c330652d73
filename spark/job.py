"""The bulk signal job (the application ``spark-submit`` runs): list, skip, compute, write Parquet.

    spark-submit spark/job.py --source DIR|s3://bucket/prefix --work-dir DIR [options]

Plain PySpark, no Django. The driver lists the source, leaves out keys the
caller already has (``--skip-keys``, one JSON string a line) and keys that an
earlier, interrupted run of the same work directory already wrote, and spreads
the rest over partitions; each task computes its keys with ``spark.compute``
and writes one Parquet file under ``WORK/output/run-*/``. Tasks commit their
file as they finish (file output committer v2), so a run killed half-way keeps
every finished partition and the next run does only what is missing.
Progress goes to ``WORK/progress.json`` twice a second.

Exit status: 0 done, 2 the source is unusable (missing, unreachable, empty),
1 anything else.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from matching.core.cnn.config import PRECISIONS
from spark.compute import SCHEMA_DDL, JobOptions, partitions_for, process_partition
from spark.progress import write_progress
from spark.sources import SourceError, open_source

EXIT_SOURCE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spark/job.py", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--kind", choices=["index", "scan"], default="index")
    p.add_argument("--attempt", type=int, default=1)
    p.add_argument("--skip-keys", help="file of keys not to process, one JSON string a line")
    p.add_argument("--partition-size", type=int, default=200, help="keys per task (and per Parquet file)")
    p.add_argument("--max-bytes", type=int, default=25 * 1024 * 1024)
    p.add_argument("--max-pixels", type=int, default=40_000_000)
    p.add_argument("--s3-endpoint", default=None)
    p.add_argument("--embed", action="store_true", help="also compute the CNN embedding, in batches")
    p.add_argument("--embedder", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--store-root", default=None, help="file:///media/root or s3://bucket/location")
    p.add_argument("--store-prefix", default="")
    p.add_argument("--store-s3-endpoint", default=None)
    p.add_argument("--features-prefix", default=None, help="also store local features under this storage prefix")
    p.add_argument("--marks-prefix", default=None, help="also extract a logo's mark and store it under this storage prefix")
    p.add_argument("--cnn-data-dir", default=None,
                   help="directory holding models/ (the CNN's converted weights), as every executor sees it")
    p.add_argument("--tf-threads", type=int, default=1, help="TensorFlow threads per Python worker")
    p.add_argument("--cnn-precision", choices=PRECISIONS, default="auto")
    p.add_argument("--max-side", type=int, default=None, help="longest side of the working picture (as checks)")
    p.add_argument("--max-decode-bytes", type=int, default=None)
    p.add_argument("--references", default=None,
                   help="scans: the protected set's snapshot directory (spark/references.py), as every executor "
                        "sees it; each image then goes through the whole matching cascade. Stored files it names "
                        "are read from --store-root")
    p.add_argument("--partial", choices=["auto", "always", "never"], default="auto",
                   help="scans: the matcher's partial-copy pass (auto: as a check, when nothing else matched)")
    return p.parse_args(argv)


def _log(message: str) -> None:
    print(f"imgprotect-bulk: {message}", flush=True)


def _read_skip(path: str | None) -> set[str]:
    if not path:
        return set()
    with open(path, encoding="utf-8") as fh:
        return {json.loads(line) for line in fh if line.strip()}


def _committed(spark: Any, output: Path) -> dict[str, bool]:
    """Keys already written by earlier runs -> whether they succeeded."""
    dirs = sorted(str(d) for d in output.glob("run-*") if any(d.glob("*.parquet")))
    if not dirs:
        return {}
    rows = spark.read.schema(SCHEMA_DDL).parquet(*dirs).select("key", "error_code").toLocalIterator()
    return {row["key"]: row["error_code"] is None for row in rows}


class Reporter(threading.Thread):
    """Writes the progress file every half second while tasks finish (accumulators update per task)."""

    def __init__(self, path: Path, state: dict[str, Any], counters: tuple[Any, Any, Any, Any]) -> None:
        super().__init__(daemon=True)
        self.path, self.state, self.counters = path, state, counters
        self.stopped = threading.Event()

    def snapshot(self) -> dict[str, Any]:
        ok, failed, cpu, warmup = (c.value for c in self.counters)
        return {**self.state, "done": self.state["reused_ok"] + ok, "failed": self.state["reused_failed"] + failed,
                "processed": ok + failed, "task_cpu_seconds": round(cpu, 3), "warmup_cpu_seconds": round(warmup, 3)}

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            write_progress(self.path, self.snapshot())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    output = work / "output"
    output.mkdir(parents=True, exist_ok=True)
    progress_path = work / "progress.json"
    state: dict[str, Any] = {"state": "listing", "attempt": args.attempt, "pid": os.getpid(), "total": None,
                             "skipped": 0, "reused_ok": 0, "reused_failed": 0, "done": 0, "failed": 0,
                             "processed": 0, "pending": None, "started": time.time()}
    write_progress(progress_path, state)
    try:
        source = open_source(args.source, endpoint_url=args.s3_endpoint)
        entries = list(source.list())
        if not entries:
            raise SourceError(f"{args.source} holds no files")
    except SourceError as exc:
        _log(f"source unusable: {exc}")
        write_progress(progress_path, {**state, "state": "failed", "error": str(exc)})
        return EXIT_SOURCE
    state["total"] = len(entries)
    state["listed_seconds"] = round(time.time() - state["started"], 3)
    _log(f"listed {len(entries)} files in {state['listed_seconds']} s")

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"imgprotect-bulk-{work.name}").getOrCreate()
    reporter: Reporter | None = None
    try:
        sc = spark.sparkContext
        state["application_id"] = sc.applicationId
        committed = _committed(spark, output)
        skip = _read_skip(args.skip_keys)
        pending: list[tuple[str, int]] = []
        for entry in entries:
            done_before = committed.get(entry.key)
            if done_before is True:
                state["reused_ok"] += 1
            elif done_before is False:
                state["reused_failed"] += 1
            elif entry.key in skip:
                state["skipped"] += 1
            else:
                pending.append((entry.key, entry.size))
        state.update(pending=len(pending), state="running")
        _log(f"{state['application_id']}: {len(pending)} to compute, {state['reused_ok'] + state['reused_failed']} "
             f"from earlier runs, {state['skipped']} skipped")
        counters = (sc.accumulator(0), sc.accumulator(0), sc.accumulator(0.0), sc.accumulator(0.0))
        reporter = Reporter(progress_path, state, counters)
        reporter.start()
        state["compute_started"] = time.time()
        if pending:
            options = JobOptions(
                source=args.source, kind=args.kind, s3_endpoint=args.s3_endpoint, max_bytes=args.max_bytes,
                max_pixels=args.max_pixels, embed=args.embed, embedder=args.embedder, batch_size=args.batch_size,
                store_root=args.store_root, store_prefix=args.store_prefix, store_s3_endpoint=args.store_s3_endpoint,
                features_prefix=args.features_prefix, marks_prefix=args.marks_prefix, cnn_data_dir=args.cnn_data_dir,
                tf_threads=args.tf_threads, cnn_precision=args.cnn_precision, max_side=args.max_side,
                max_decode_bytes=args.max_decode_bytes, references=args.references, partial=args.partial,
            )
            rdd = sc.parallelize(pending, partitions_for(len(pending), args.partition_size)).mapPartitions(
                lambda it: process_partition(it, options, counters)
            )
            frame = spark.createDataFrame(rdd, schema=SCHEMA_DDL, verifySchema=False)
            frame.write.mode("errorifexists").parquet(str(output / f"run-{args.attempt:03d}-{uuid.uuid4().hex[:8]}"))
        state["compute_finished"] = time.time()
        reporter.stopped.set()
        reporter.join()
        final = {**reporter.snapshot(), "state": "done"}
        write_progress(progress_path, final)
        _log(f"done: {final['done']} ok, {final['failed']} failed of {final['total']} "
             f"in {final['compute_finished'] - final['compute_started']:.1f} s of compute")
        return 0
    except BaseException as exc:
        if reporter is not None:
            reporter.stopped.set()
        traceback.print_exc()
        write_progress(progress_path, {**state, "state": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
