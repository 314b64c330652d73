"""Writes for bulk jobs: create, start, run (Spark, then load), cancel, resume, sweep.

A job is claimed atomically before anything runs (queued -> running), every
later transition is a conditional UPDATE on the status the runner expects, and
the runner refreshes a heartbeat while it works. So a cancelled job stops at
the next poll, a job whose worker died is failed by the sweeper, and a
redelivered task does nothing.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from catalog.models import Collection, Organisation, ProtectedImage
from catalog.sources import SourceError, open_source, source_check_allowed
from imgprotect import dispatch
from imgprotect.errors import Conflict, ServiceError
from matching.bulk import load
from matching.alerts import match_alerts_send_for
from matching.bulk.models import BulkJob, BulkJobError, Watch, WatchKey
from matching.bulk.references import scan_references_write
from matching.engine import cnn_enabled
from matching.index_registry import registry
from spark.progress import read_progress
from spark.submit import SubmitError, build_submission, launch, stop

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 1.0
LOG_TAIL_BYTES = 6000

ProgressCallback = Callable[[BulkJob], None]


class JobFailed(Exception):
    """The job cannot finish; the message says why (stored on the job)."""


class _Stopped(Exception):
    """Someone else moved the job on (cancelled it, or the sweeper failed it): stop quietly."""


# --- create, start, cancel, resume ---------------------------------------------------------

def _enqueue(job_id: int) -> None:
    dispatch.enqueue_on_commit("workers.bulk.run_bulk_job", job_id)


@transaction.atomic
def bulkjob_create(
    *,
    organisation: Organisation,
    kind: str,
    source: str,
    collection: Collection | None = None,
    embed: bool | None = None,
    spark_master: str | None = None,
    created_by: User | None = None,
    trusted: bool = False,
    start: bool = True,
    extra_options: dict[str, Any] | None = None,
    watch: Watch | None = None,
) -> BulkJob:
    """Record a bulk job and, with ``start``, queue it to run after commit.

    ``trusted`` is for the command line (see ``source_check_allowed``); the API
    passes False. ``spark_master`` and ``extra_options`` (embedder,
    partition_size) are operator settings, never taken from API input.
    """
    if kind not in BulkJob.Kind.values:
        raise ServiceError(f"Unknown job kind {kind!r}; use index or scan.", code="invalid_kind")
    if collection is not None and collection.organisation_id != organisation.pk:
        raise ServiceError("The collection belongs to another organisation.", code="invalid_collection")
    if kind == BulkJob.Kind.INDEX and collection is None:
        raise ServiceError("An index job needs a collection.", code="invalid_collection")
    try:
        canonical = source_check_allowed(source, organisation_slug=organisation.slug, trusted=trusted)
    except SourceError as exc:
        raise ServiceError(str(exc), code="source_not_allowed") from exc
    if embed is None:  # as indexing in-process does: embed when the CNN stage is on
        embed = cnn_enabled()
    options: dict[str, Any] = {"embed": bool(embed), **(extra_options or {})}
    if spark_master:
        options["spark_master"] = spark_master
    user = created_by if created_by is not None and created_by.is_authenticated else None
    job = BulkJob.objects.create(organisation=organisation, collection=collection, kind=kind, source=canonical,
                                 options=options, created_by=user, heartbeat=timezone.now(), watch=watch)
    if start:
        _enqueue(job.pk)
    return job


def bulkjob_start(*, job: BulkJob) -> None:
    """Queue a queued job's run (after commit)."""
    _enqueue(job.pk)


def bulkjob_cancel(*, job: BulkJob) -> BulkJob:
    """Stop a job. The process following it kills spark-submit at its next poll."""
    if not BulkJob.objects.filter(pk=job.pk, status__in=BulkJob.ACTIVE).update(
        status=BulkJob.Status.CANCELLED, finished=timezone.now(), rate=None
    ):
        job.refresh_from_db()
        raise Conflict(f"The job is {job.status}; only queued, running or loading jobs can be cancelled.",
                       code="not_cancellable")
    job.refresh_from_db()
    return job


@transaction.atomic
def bulkjob_resume(*, job: BulkJob, start: bool = True) -> BulkJob:
    """Queue a failed or cancelled job again; its next run computes only the keys still missing."""
    if not BulkJob.objects.filter(pk=job.pk, status__in=BulkJob.RESUMABLE).update(
        status=BulkJob.Status.QUEUED, error="", finished=None, rate=None, heartbeat=timezone.now()
    ):
        job.refresh_from_db()
        raise Conflict(f"The job is {job.status}; only failed or cancelled jobs can be resumed.",
                       code="not_resumable")
    if start:
        _enqueue(job.pk)
    job.refresh_from_db()
    return job


def bulkjob_find_resumable(*, organisation: Organisation, kind: str, source: str,
                           collection: Collection | None) -> BulkJob | None:
    """The latest failed or cancelled job over the same source, for the command line's rerun."""
    try:
        canonical = source_check_allowed(source, organisation_slug=organisation.slug, trusted=True)
    except SourceError:
        return None
    return BulkJob.objects.filter(organisation=organisation, kind=kind, source=canonical, collection=collection,
                                  status__in=BulkJob.RESUMABLE).order_by("-created").first()


# --- running --------------------------------------------------------------------------------

def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _log_path(job: BulkJob) -> Path:
    return job.work_dir / f"spark-{job.attempts}.log"


@dataclass
class _Storage:
    root: str
    endpoint: str | None
    env: dict[str, str]


def _storage_target() -> _Storage:
    """Where executors write indexed images so that Django's default storage finds them."""
    from django.core.files.storage import FileSystemStorage, default_storage

    if isinstance(default_storage, FileSystemStorage):
        return _Storage(f"file://{Path(default_storage.location).resolve()}", None, {})
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages is a dependency
        S3Storage = None  # noqa: N806
    if S3Storage is not None and isinstance(default_storage, S3Storage):
        env = {}
        if default_storage.access_key and default_storage.secret_key:
            env = {"AWS_ACCESS_KEY_ID": default_storage.access_key,
                   "AWS_SECRET_ACCESS_KEY": default_storage.secret_key}
        location = (default_storage.location or "").strip("/")
        return _Storage(f"s3://{default_storage.bucket_name}/{location}", default_storage.endpoint_url or None, env)
    raise JobFailed(f"Bulk indexing writes images to local or S3 storage; {type(default_storage).__name__} "
                    "is neither.")


def _write_skip_file(job: BulkJob, path: Path) -> None:
    """Keys the job leaves alone (reported as skipped): an index job's collection already holds them,
    a watch's run already saw them in an earlier run."""
    keys: QuerySet[Any, str]
    if job.kind == BulkJob.Kind.SCAN:
        assert job.watch_id is not None  # only a watch's runs skip keys in a scan
        keys = WatchKey.objects.filter(watch_id=job.watch_id).values_list("key", flat=True)
    else:
        assert job.collection_id is not None  # an index job has a collection (bulkjob_create)
        keys = ProtectedImage.objects.filter(collection_id=job.collection_id).values_list("key", flat=True)
    with open(path, "w", encoding="utf-8") as fh:
        for key in keys.iterator(chunk_size=10000):
            fh.write(json.dumps(key) + "\n")


def _job_arguments(job: BulkJob) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The job's command-line arguments, its environment, and secrets for the environment only."""
    options = job.options or {}
    endpoint = settings.IMGPROTECT_SOURCE_S3_ENDPOINT_URL or None
    args = ["--source", job.source, "--work-dir", str(job.work_dir), "--kind", job.kind,
            "--attempt", str(job.attempts),
            "--partition-size", str(options.get("partition_size") or settings.IMGPROTECT_BULK_PARTITION_SIZE),
            "--max-bytes", str(settings.IMGPROTECT_MAX_UPLOAD_BYTES),
            "--max-pixels", str(settings.IMGPROTECT_MAX_PIXELS)]
    env: dict[str, str] = {}
    secrets: dict[str, str] = {}
    if endpoint:
        args += ["--s3-endpoint", endpoint]
    if options.get("embed"):
        args += ["--embed", "--embedder", options.get("embedder") or "auto", "--cnn-data-dir", str(Path(settings.DATA_DIR).resolve()),
                 "--tf-threads", str(settings.IMGPROTECT_TF_THREADS), "--cnn-precision", settings.IMGPROTECT_CNN_PRECISION]
    if job.kind == BulkJob.Kind.SCAN:
        # A scan is a check at scale: executors run the whole cascade against this snapshot and read
        # the reference features and files it names from the storage indexing wrote them to.
        target = _storage_target()
        args += ["--references", str(scan_references_write(job=job)), "--store-root", target.root,
                 "--max-side", str(settings.IMGPROTECT_WORK_MAX_SIDE),
                 "--max-decode-bytes", str(settings.IMGPROTECT_MAX_DECODE_BYTES)]
        if target.endpoint:
            args += ["--store-s3-endpoint", target.endpoint]
        secrets.update(target.env)
        if job.watch_id is not None:  # a watch's run scans only the keys its earlier runs did not see
            skip = job.work_dir / f"skip-{job.attempts}.jsonl"
            _write_skip_file(job, skip)
            args += ["--skip-keys", str(skip)]
    if job.kind == BulkJob.Kind.INDEX:
        skip = job.work_dir / f"skip-{job.attempts}.jsonl"
        _write_skip_file(job, skip)
        target = _storage_target()
        args += ["--skip-keys", str(skip), "--store-root", target.root,
                 "--store-prefix", f"protected/{job.organisation_id}/{job.collection_id}/bulk",
                 "--features-prefix", f"features/{job.organisation_id}/{job.collection_id}/bulk",
                 "--marks-prefix", f"marks/{job.organisation_id}/{job.collection_id}/bulk"]
        if target.endpoint:
            args += ["--store-s3-endpoint", target.endpoint]
        secrets.update(target.env)
    return args, env, secrets


def _heartbeat(job: BulkJob, expected: str, **fields: Any) -> None:
    """Refresh the heartbeat (and progress fields); raise _Stopped when the job is no longer ``expected``."""
    fields["heartbeat"] = timezone.now()
    if not BulkJob.objects.filter(pk=job.pk, status=expected).update(**fields):
        raise _Stopped()
    for name, value in fields.items():
        setattr(job, name, value)


def _apply_progress(job: BulkJob, progress: dict[str, Any] | None, log_path: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {"log_tail": _tail(log_path)}
    if progress and progress.get("attempt") == job.attempts:
        fields.update(total=progress.get("total"), done=progress.get("done", 0), failed=progress.get("failed", 0),
                      skipped=progress.get("skipped", 0), spark_app_id=progress.get("application_id") or "")
        began = progress.get("compute_started")
        if began and progress.get("processed"):
            fields["rate"] = progress["processed"] / max(time.time() - began, 1e-3)
    return fields


def _run_spark(job: BulkJob, on_progress: ProgressCallback | None) -> dict[str, Any]:
    """Run spark-submit for the job's current attempt and follow it to the end; the final progress."""
    work = job.work_dir
    work.mkdir(parents=True, exist_ok=True)
    (work / "progress.json").unlink(missing_ok=True)  # never mistake the last attempt's file for this one's
    args, env, secrets = _job_arguments(job)
    master = (job.options or {}).get("spark_master") or settings.SPARK_MASTER
    try:
        submission = build_submission(master=master, job_args=args, work_dir=work,
                                      driver_memory=settings.SPARK_DRIVER_MEMORY,
                                      executor_memory=settings.SPARK_EXECUTOR_MEMORY or None, extra_env=env,
                                      secret_env=secrets, extra_conf=settings.SPARK_CONF)
    except SubmitError as exc:
        raise JobFailed(str(exc)) from exc
    log_path = _log_path(job)
    process = launch(submission, log_path)
    log.info("bulk job %s attempt %s: spark-submit pid %s on %s", job.pk, job.attempts, process.pid, master)
    last_beat = 0.0
    try:
        _heartbeat(job, BulkJob.Status.RUNNING, driver_pid=process.pid)
        while True:
            code = process.poll()
            if code is not None or time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                _heartbeat(job, BulkJob.Status.RUNNING,
                           **_apply_progress(job, read_progress(work / "progress.json"), log_path))
                last_beat = time.monotonic()
                if on_progress is not None:
                    on_progress(job)
            if code is not None:
                break
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop(process)  # cancelled, failed by the sweeper, interrupted: the driver must not live on
        raise
    stop(process, grace=0)  # reap anything the finished driver left in its process group
    progress = read_progress(work / "progress.json") or {}
    if code != 0 or progress.get("state") != "done" or progress.get("attempt") != job.attempts:
        if progress.get("state") == "failed" and progress.get("error"):
            raise JobFailed(progress["error"])
        raise JobFailed(f"spark-submit exited with status {code}; see the log.")
    return progress


def _fail(job: BulkJob, message: str) -> None:
    BulkJob.objects.filter(pk=job.pk, status__in=BulkJob.ACTIVE).update(
        status=BulkJob.Status.FAILED, error=message[:4000], finished=timezone.now(), rate=None,
        log_tail=_tail(_log_path(job)) or job.log_tail,
    )


def bulkjob_run(*, job_id: int, on_progress: ProgressCallback | None = None) -> BulkJob | None:
    """Run a queued job to its end: Spark computes signals, then the output is loaded. Idempotent.

    Only the call that claims the job (queued -> running) does anything. The
    job ends done, failed (with the reason and the log tail) or cancelled;
    this function does not raise for a failed job.
    """
    now = timezone.now()
    if not BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.QUEUED).update(
        status=BulkJob.Status.RUNNING, started=now, heartbeat=now, finished=None, error="", rate=None,
        attempts=F("attempts") + 1,
    ):
        return BulkJob.objects.filter(pk=job_id).first()
    job = BulkJob.objects.select_related("organisation", "collection").get(pk=job_id)
    started = time.perf_counter()
    try:
        # An unreachable or empty source fails here, before any JVM starts.
        open_source(job.source).check()
        progress = _run_spark(job, on_progress)
        spark_seconds = time.perf_counter() - started
        _heartbeat(job, BulkJob.Status.RUNNING, status=BulkJob.Status.LOADING)
        if on_progress is not None:
            on_progress(job)
        bulkjob_load(job=job)
        _finish(job, progress)
        log.info("bulk job %s done: spark %.1f s, load %.1f s", job.pk, spark_seconds,
                 time.perf_counter() - started - spark_seconds)
    except _Stopped:
        log.info("bulk job %s stopped: it was cancelled or failed elsewhere", job_id)
    except (SourceError, JobFailed, ServiceError) as exc:
        log.warning("bulk job %s failed: %s", job_id, exc)
        _fail(job, str(exc))
    except (KeyboardInterrupt, SystemExit):
        _fail(job, "Interrupted; resume the job to finish the missing keys.")
        raise
    except Exception as exc:
        log.exception("bulk job %s failed", job_id)
        _fail(job, f"{type(exc).__name__}: {exc}")
    job.refresh_from_db()
    if on_progress is not None:
        on_progress(job)
    return job


def bulkjob_load(*, job: BulkJob) -> None:
    """Write the job's Parquet output into the database (the job must be ``loading``). Idempotent."""

    def heartbeat() -> None:
        _heartbeat(job, BulkJob.Status.LOADING)

    if job.kind == BulkJob.Kind.INDEX:
        inserted = load.load_index(job, heartbeat)
        log.info("bulk job %s: %s images inserted", job.pk, inserted)
        # Extend the organisation's index snapshot now, so matching workers load it instead of rebuilding.
        registry.get(job.organisation_id)
    else:
        load.load_scan(job, heartbeat)


def _finish(job: BulkJob, progress: dict[str, Any]) -> None:
    total = int(progress.get("total") or 0)
    failed = BulkJobError.objects.filter(job=job).count()
    skipped = int(progress.get("skipped") or 0)
    done = max(0, total - failed - skipped)
    if not BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.LOADING).update(
        status=BulkJob.Status.DONE, total=total, done=done, failed=failed, skipped=skipped,
        finished=timezone.now(), heartbeat=timezone.now(), rate=None, log_tail=_tail(_log_path(job)),
    ):
        raise _Stopped()


def scan_summary_send(*, job_id: int) -> int:
    """A scan's alerts: one summary per collection of the matches it reported (all attempts). Idempotent."""
    job = BulkJob.objects.filter(pk=job_id, kind=BulkJob.Kind.SCAN).first()
    if job is None:
        return 0
    ids = list(job.matches.order_by("id").values_list("id", flat=True))
    if not ids:
        return 0
    return match_alerts_send_for(match_ids=ids, scan={"id": job.pk, "source": job.source, "watch": job.watch_id})


# --- housekeeping ---------------------------------------------------------------------------

def bulkjob_sweep() -> int:
    """Fail jobs whose heartbeat stopped (their worker or driver died); re-queue lost queued jobs.

    Returns how many jobs were failed.
    """
    now = timezone.now()
    deadline = now - datetime.timedelta(seconds=settings.IMGPROTECT_BULK_STALE_AFTER_SECONDS)
    failed = 0
    for job in BulkJob.objects.filter(status__in=[BulkJob.Status.RUNNING, BulkJob.Status.LOADING],
                                      heartbeat__lt=deadline):
        seconds = int((now - job.heartbeat).total_seconds()) if job.heartbeat else None
        message = (f"No progress report for {seconds} s while {job.status}: the worker or the Spark driver "
                   "running this job stopped. Resume the job to finish the missing keys.")
        if BulkJob.objects.filter(pk=job.pk, status=job.status, heartbeat__lt=deadline).update(
            status=BulkJob.Status.FAILED, error=message, finished=now, rate=None,
            log_tail=_tail(_log_path(job)) or job.log_tail,
        ):
            failed += 1
            log.warning("bulk job %s: %s", job.pk, message)
    # A queued job whose message was lost (broker restart) would wait forever: send it again, once per
    # period (the claim makes a duplicate message harmless).
    for job_id in BulkJob.objects.filter(status=BulkJob.Status.QUEUED, heartbeat__lt=deadline).values_list(
        "id", flat=True
    ):
        if BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.QUEUED, heartbeat__lt=deadline).update(
            heartbeat=now
        ):
            dispatch.task("workers.bulk.run_bulk_job").delay(job_id)
    return failed


def bulkjob_purge_output(*, job: BulkJob) -> None:
    """Delete a finished job's work directory (Parquet output and logs)."""
    if job.status in BulkJob.ACTIVE:
        raise Conflict("The job is still active.", code="job_active")
    shutil.rmtree(job.work_dir, ignore_errors=True)


__all__ = [
    "JobFailed", "bulkjob_cancel", "bulkjob_create", "bulkjob_find_resumable", "bulkjob_load", "bulkjob_purge_output",
    "bulkjob_resume", "bulkjob_run", "bulkjob_start", "bulkjob_sweep", "scan_summary_send",
]
