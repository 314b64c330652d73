"""Bulk job services without a JVM: validation, allowed roots, transitions, sweeper, idempotent loading."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.utils import timezone

from catalog.models import ProtectedImage
from imgprotect.errors import Conflict, ServiceError
from catalog.sources import SourceNotAllowed, source_check_allowed
from matching.bulk import services
from matching.bulk.models import BulkJob, BulkJobError
from matching.core.loading import load_image
from matching.core.signals import compute_signals
from spark.compute import FIELDS
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import photo_png, resized_jpeg

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection(org):  # type: ignore[no-untyped-def]
    return CollectionFactory(organisation=org, name="Brand")


# --- allowed roots -----------------------------------------------------------------------------

def test_without_roots_only_the_command_line_may_name_a_source(tmp_path: Path):
    assert source_check_allowed(str(tmp_path), organisation_slug="acme", trusted=True) == str(tmp_path.resolve())
    with pytest.raises(SourceNotAllowed, match="IMGPROTECT_SOURCE_ROOTS"):
        source_check_allowed(str(tmp_path), organisation_slug="acme", trusted=False)


def test_roots_are_an_allow_list_for_everyone(settings, tmp_path: Path):
    allowed, other = tmp_path / "crawls", tmp_path / "elsewhere"
    (allowed / "2025").mkdir(parents=True)
    other.mkdir()
    os.symlink(other, allowed / "link-out")
    settings.IMGPROTECT_SOURCE_ROOTS = f"acme={allowed},s3://crawl-bucket/public"
    assert source_check_allowed(str(allowed / "2025"), organisation_slug="acme", trusted=False) == str(allowed / "2025")
    assert source_check_allowed("s3://crawl-bucket/public/2025/", organisation_slug="acme",
                                trusted=False) == "s3://crawl-bucket/public/2025"
    refused = [str(other), str(allowed / "link-out"), str(allowed / ".." / "elsewhere"), str(allowed) + "-2",
               "s3://crawl-bucket/private", "s3://crawl-bucket/publicity", "file:///etc", "relative/dir",
               "s3://crawl-bucket/public/../private", "s3://crawl-bucket/public//x"]
    for source in refused:
        with pytest.raises(SourceNotAllowed):
            source_check_allowed(source, organisation_slug="acme", trusted=False)
    with pytest.raises(SourceNotAllowed):  # roots bind the command line too
        source_check_allowed(str(other), organisation_slug="acme", trusted=True)


def test_finding_02_each_organisation_reads_only_its_own_roots(settings, tmp_path: Path):
    """Organisation B's admin named org A's private folder as a bulk source and indexed A's
    files: roots now belong to organisations, for the API (untrusted) and commands alike."""
    data = tmp_path / "data"
    for path in ("acme/private", "beta/drop", "shared/acme/2025", "shared/beta/2025", "shared/acme-evil"):
        (data / path).mkdir(parents=True)
    os.symlink(data / "acme" / "private", data / "beta" / "drop" / "into-acme")
    settings.IMGPROTECT_SOURCE_ROOTS = (f"acme={data / 'acme'},s3://bucket/acme;beta={data / 'beta'},s3://bucket/beta;"
                                        f"{data / 'shared'},s3://bucket/shared")
    allowed = {
        "acme": [data / "acme" / "private", data / "shared" / "acme" / "2025", "s3://bucket/acme/x",
                 "s3://bucket/shared/acme/2025"],
        "beta": [data / "beta" / "drop", data / "shared" / "beta", "s3://bucket/beta", "s3://bucket/shared/beta/"],
    }
    for org, sources in allowed.items():
        other = "beta" if org == "acme" else "acme"
        for source in sources:
            for trusted in (False, True):
                assert source_check_allowed(str(source), organisation_slug=org, trusted=trusted)
                with pytest.raises(SourceNotAllowed):
                    source_check_allowed(str(source), organisation_slug=other, trusted=trusted)
    for source in [data / "beta" / "drop" / "into-acme", data / "beta" / ".." / "acme" / "private", data / "shared",
                   data / "shared" / "acme-evil", "s3://bucket/shared", "s3://bucket/beta/../acme", "s3://bucket/acmex"]:
        with pytest.raises(SourceNotAllowed):
            source_check_allowed(str(source), organisation_slug="beta", trusted=False)
    assert source_check_allowed(str(data / "shared" / "acme-evil"), organisation_slug="acme-evil", trusted=False)


def test_finding_02_a_job_of_one_organisation_cannot_read_anothers_folder(settings, tmp_path: Path):
    acme, beta = OrganisationFactory(slug="acme"), OrganisationFactory(slug="beta")
    for org in (acme, beta):
        (tmp_path / org.slug / "private").mkdir(parents=True)
    settings.IMGPROTECT_SOURCE_ROOTS = f"acme={tmp_path / 'acme'};beta={tmp_path / 'beta'}"
    beta_collection = CollectionFactory(organisation=beta)
    with pytest.raises(ServiceError) as err:
        services.bulkjob_create(organisation=beta, kind="index", source=str(tmp_path / "acme" / "private"),
                                collection=beta_collection, start=False)
    assert err.value.code == "source_not_allowed"
    for trusted in (False, True):  # the API and the portal, and the commands
        with pytest.raises(ServiceError):
            services.bulkjob_create(organisation=beta, kind="scan", source=str(tmp_path / "acme"), trusted=trusted,
                                    start=False)
    assert not BulkJob.objects.exists()
    job = services.bulkjob_create(organisation=beta, kind="index", source=str(tmp_path / "beta" / "private"),
                                  collection=beta_collection, start=False)
    assert job.source == str((tmp_path / "beta" / "private").resolve())


# --- create, cancel, resume ------------------------------------------------------------------

def test_create_validates_before_writing(org, collection, tmp_path: Path):
    foreign = CollectionFactory(organisation=OrganisationFactory())
    cases = [
        ({"kind": "reindex", "collection": collection}, "invalid_kind"),
        ({"kind": "index"}, "invalid_collection"),
        ({"kind": "index", "collection": foreign}, "invalid_collection"),
        ({"kind": "scan", "trusted": False}, "source_not_allowed"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ServiceError) as err:
            services.bulkjob_create(organisation=org, source=str(tmp_path), **{"trusted": True, **kwargs})
        assert err.value.code == code
    assert not BulkJob.objects.exists()


def test_create_queues_the_run_after_commit(org, collection, tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.bulkjob_create(organisation=org, kind="index", source=str(tmp_path), collection=collection,
                                      trusted=True)
    assert job.status == "queued" and job.source == str(tmp_path.resolve()) and job.options == {"embed": False}
    assert len(callbacks) == 1


def test_missing_or_empty_source_fails_the_job_at_once_without_spark(org, collection, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for source, message in [(tmp_path / "missing", "is not a readable directory"),
                            (tmp_path / "empty", "holds no files")]:
        job = services.bulkjob_create(organisation=org, kind="index", source=str(source), collection=collection,
                                      trusted=True, start=False)
        job = services.bulkjob_run(job_id=job.pk)
        assert job.status == "failed" and message in job.error
        assert job.driver_pid is None and job.finished is not None  # no spark-submit was started


def test_cancel_and_resume_are_state_machine_transitions(org, collection, tmp_path,
                                                         django_capture_on_commit_callbacks):
    job = services.bulkjob_create(organisation=org, kind="index", source=str(tmp_path), collection=collection,
                                  trusted=True, start=False)
    with pytest.raises(Conflict):
        services.bulkjob_resume(job=job)
    job = services.bulkjob_cancel(job=job)
    assert job.status == "cancelled" and job.finished is not None
    with pytest.raises(Conflict):
        services.bulkjob_cancel(job=job)
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.bulkjob_resume(job=job)
    assert job.status == "queued" and job.finished is None and len(callbacks) == 1
    assert services.bulkjob_run(job_id=job.pk + 1000) is None  # unknown ids do nothing
    BulkJob.objects.filter(pk=job.pk).update(status="running")
    assert services.bulkjob_run(job_id=job.pk).status == "running"  # only a queued job is claimed


def test_resumable_job_is_found_for_a_rerun_of_the_same_command(org, collection, tmp_path: Path):
    job = services.bulkjob_create(organisation=org, kind="index", source=str(tmp_path), collection=collection,
                                  trusted=True, start=False)
    assert services.bulkjob_find_resumable(organisation=org, kind="index", source=str(tmp_path),
                                           collection=collection) is None
    BulkJob.objects.filter(pk=job.pk).update(status="failed")
    found = services.bulkjob_find_resumable(organisation=org, kind="index", source=str(tmp_path) + "/",
                                            collection=collection)
    assert found == job


# --- the sweeper -------------------------------------------------------------------------------

def test_sweeper_fails_jobs_whose_heartbeat_stopped_and_keeps_their_log(org, collection, tmp_path, settings,
                                                                        monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr("workers.bulk.run_bulk_job.delay", sent.append)
    old = timezone.now() - timezone.timedelta(seconds=settings.IMGPROTECT_BULK_STALE_AFTER_SECONDS + 5)
    stale = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                   status="running", attempts=1, heartbeat=old, started=old)
    stale.work_dir.mkdir(parents=True)
    (stale.work_dir / "spark-1.log").write_text("imgprotect-bulk: listed 10 files\nJVM died\n")
    loading = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                     status="loading", attempts=1, heartbeat=old, log_tail="kept tail")
    fresh = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                   status="running", attempts=1, heartbeat=timezone.now())
    lost = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                  status="queued", heartbeat=old)
    assert services.bulkjob_sweep() == 2
    stale.refresh_from_db()
    assert stale.status == "failed" and "stopped" in stale.error and "JVM died" in stale.log_tail
    loading.refresh_from_db()
    assert loading.status == "failed" and loading.log_tail == "kept tail"
    fresh.refresh_from_db()
    assert fresh.status == "running"
    assert sent == [lost.pk]  # a queued job whose message was lost is sent again, once per period
    assert services.bulkjob_sweep() == 0 and sent == [lost.pk]


# --- loading Parquet output (written here with pyarrow, as Spark writes it) ----------------------

def write_output(job: BulkJob, rows: list[dict], name: str = "part-00000.parquet") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "array<float>": pa.list_(pa.float32()),
             "array<binary>": pa.list_(pa.binary())}
    schema = pa.schema([(n, types[t]) for n, t in FIELDS])
    run = job.work_dir / "output" / "run-001-test"
    run.mkdir(parents=True, exist_ok=True)
    full = [{n: row.get(n) for n, _ in FIELDS} for row in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), run / name)


def ok_row(key: str, data: bytes, stored: str | None = None) -> dict:
    signals = compute_signals(load_image(data))
    return {"key": key, "size": len(data), "sha256_bytes": signals["sha256_bytes"],
            "sha256_pixels": signals["sha256_pixels"], "phash": signals["phash"], "width": signals["width"],
            "height": signals["height"], "format": signals["format"], "signals": json.dumps(signals),
            "stored_name": stored or f"protected/x/{key}"}


def test_loading_twice_never_duplicates_and_refuses_second_copies(org, collection, tmp_path: Path):
    job = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                 status="loading", attempts=1)
    coffee = photo_png("coffee")
    write_output(job, [
        ok_row("coffee.png", coffee),
        ok_row("chelsea small.jpg", resized_jpeg("chelsea")),
        ok_row("coffee again.png", coffee),  # the same picture under a second key
        {"key": "broken.jpg", "size": 3, "error_code": "corrupt_image", "error_reason": "The JPEG is corrupt."},
    ])
    write_output(job, [ok_row("rocket.png", photo_png("rocket"))], name="part-00001.parquet")
    generation = org.index_generation
    for _ in range(2):
        services.bulkjob_load(job=job)
    images = ProtectedImage.objects.filter(collection=collection)
    assert sorted(images.values_list("key", flat=True)) == ["chelsea small.jpg", "coffee.png", "rocket.png"]
    assert set(images.values_list("status", flat=True)) == {"indexed"}
    coffee_row = images.get(key="coffee.png")
    assert coffee_row.file.name == "protected/x/coffee.png" and coffee_row.phash is not None
    assert coffee_row.signals["sha256_pixels"] == coffee_row.sha256_pixels
    errors = dict(BulkJobError.objects.filter(job=job).values_list("key", "code"))
    assert errors == {"broken.jpg": "corrupt_image", "coffee again.png": "duplicate_image"}
    org.refresh_from_db()
    assert org.index_generation > generation
    # The loaded images are searchable at once.
    from matching.engine import find_candidates

    candidates, _ = find_candidates(organisation_id=org.pk, signals=compute_signals(load_image(
        resized_jpeg("rocket", 0.5))), top_k=3)
    assert candidates[0].image.key == "rocket.png" and candidates[0].decision.is_match


def test_a_load_queues_one_retroactive_recheck_for_what_it_indexed(org, collection, tmp_path: Path, monkeypatch):
    """Images added by a bulk index are searched for among past suspects, as uploaded ones are."""
    queued: list[tuple[str, tuple, dict]] = []
    for where in ("matching.bulk.load", "matching.retro"):
        monkeypatch.setattr(f"{where}.enqueue_on_commit", lambda name, *args, **kw: queued.append((name, args, kw)))
    job = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                 status="loading", attempts=1)
    write_output(job, [ok_row("coffee.png", photo_png("coffee")), ok_row("rocket.png", photo_png("rocket"))])
    services.bulkjob_load(job=job)
    first = ProtectedImage.objects.filter(collection=collection).order_by("indexed_at", "pk").first()
    rechecks = [q for q in queued if q[0] == "workers.tasks.recheck_suspects"]
    assert first is not None and [args for _, args, _ in rechecks] == [([first.pk],)]
    # A load that indexed nothing new queues nothing.
    queued.clear()
    empty = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                   status="loading", attempts=1)
    write_output(empty, [{"key": "broken.jpg", "size": 3, "error_code": "corrupt_image",
                          "error_reason": "The JPEG is corrupt."}])
    services.bulkjob_load(job=empty)
    assert not [q for q in queued if q[0] == "workers.tasks.recheck_suspects"]


ODD_KEYS = ["tab\there.png", "new\nline.png", "carriage\rreturn.png", "back\\slash\\N.png", "\\N",
            "quotes 'single' \"double\".png", "ünïcødé 写真 🖼.png", "comma,semi;colon|pipe.png"]


def test_odd_keys_load_exactly_on_the_configured_database_and_twice_is_a_no_op(org, collection, tmp_path: Path):
    """On PostgreSQL the loader streams rows through COPY's text format, where tabs, newlines and backslashes
    are syntax: every key must come back byte for byte, and a second insert of the same rows adds nothing."""
    from django.db import connection, transaction

    from matching.bulk.load import _image, _insert
    from tests.conftest import requested_database_engine

    assert connection.settings_dict["ENGINE"] == requested_database_engine()  # COPY on PostgreSQL's run
    job = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                 status="loading", attempts=1)
    names = ["coffee", "chelsea", "rocket", "astronaut", "camera", "coins", "horse", "shepp_logan_phantom"]
    rows = [ok_row(key, resized_jpeg(name, 0.25)) for key, name in zip(ODD_KEYS, names, strict=True)]
    write_output(job, rows)
    for _ in range(2):
        services.bulkjob_load(job=job)
    stored = ProtectedImage.objects.filter(collection=collection)
    assert sorted(stored.values_list("key", flat=True)) == sorted(ODD_KEYS)
    assert not BulkJobError.objects.filter(job=job).exists()
    for row in rows:  # every column came through the COPY text format unchanged, not only the key
        image = stored.get(key=row["key"])
        assert (image.file.name, image.sha256_pixels, image.width, image.height) == (
            row["stored_name"], row["sha256_pixels"], row["width"], row["height"])
        assert image.signals["sha256_pixels"] == row["sha256_pixels"]
    # The insert itself is idempotent (ON CONFLICT DO NOTHING / ignore_conflicts), not only the loader's filter.
    with transaction.atomic():
        assert _insert(collection, [_image(collection, row) for row in rows]) == 0
    assert stored.count() == len(ODD_KEYS)


def test_spark_conf_reaches_spark_submit_and_overrides_ours(org, collection, settings, tmp_path: Path, monkeypatch):
    """SPARK_CONF (docs/bulk.md, clusters): e.g. the Python of YARN executors, unpacked from an archive."""
    settings.SPARK_CONF = {"spark.pyspark.python": "./environment/bin/python", "spark.executor.cores": "4"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(photo_png("coffee"))
    submitted = []

    def no_cluster_here(submission, log_path):  # type: ignore[no-untyped-def]
        submitted.append(submission.command)
        raise OSError("no cluster in this test")

    monkeypatch.setattr(services, "launch", no_cluster_here)
    job = services.bulkjob_create(organisation=org, kind="index", source=str(tmp_path / "src"), collection=collection,
                                  trusted=True, start=False)
    job = services.bulkjob_run(job_id=job.pk)
    assert job.status == "failed" and "no cluster in this test" in job.error
    (command,) = submitted
    conf = dict(command[i + 1].split("=", 1) for i, part in enumerate(command) if part == "--conf")
    assert conf["spark.pyspark.python"] == "./environment/bin/python" and conf["spark.executor.cores"] == "4"
    assert conf["spark.pyspark.driver.python"] != "./environment/bin/python"  # the driver runs here, in client mode


def test_a_job_resumed_across_an_upgrade_loads_rows_of_both_schemas(org, collection, tmp_path: Path):
    """Output written before the mark columns existed (an earlier run of the same job) and after:
    each row keeps what its own file holds, whichever file the reader meets first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.images import encode, transparent_logo

    job = BulkJob.objects.create(organisation=org, collection=collection, kind="index", source=str(tmp_path),
                                 status="loading", attempts=2)
    old_run = job.work_dir / "output" / "run-000-before"
    old_run.mkdir(parents=True)
    older = [(n, t) for n, t in FIELDS if n not in ("mark_name", "mark_info", "mark_embeddings", "keypoints", "flags")]
    types = {"string": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "array<float>": pa.list_(pa.float32()),
             "array<binary>": pa.list_(pa.binary())}
    row = ok_row("coffee.png", photo_png("coffee"))
    pq.write_table(pa.Table.from_pylist([{n: row.get(n) for n, _ in older}],
                                        schema=pa.schema([(n, types[t]) for n, t in older])), old_run / "part-0.parquet")
    logo = ok_row("acme.png", encode(transparent_logo(), "PNG"))
    write_output(job, [{**logo, "mark_name": "marks/1/2/bulk/ab/acme.png", "keypoints": 57, "flags": "[]",
                        "mark_info": json.dumps({"box": [1, 2, 30, 40], "source": "alpha", "background": None})}])
    services.bulkjob_load(job=job)
    images = {i.key: i for i in ProtectedImage.objects.filter(collection=collection)}
    assert set(images) == {"coffee.png", "acme.png"}
    assert images["acme.png"].mark.name == "marks/1/2/bulk/ab/acme.png" and images["acme.png"].keypoint_count == 57
    assert images["acme.png"].mark_info["box"] == [1, 2, 30, 40]
    assert not images["coffee.png"].mark and images["coffee.png"].mark_info is None
