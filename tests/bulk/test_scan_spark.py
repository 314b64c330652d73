"""scan_images through Spark: match reports (and one alert summary) for planted copies, none for unrelated
images; a scan that lost a partition resumes computing only its keys and reports nothing twice."""
from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core import mail
from django.core.management import call_command

from matching import protection
from bench.metrics import polygon_iou
from matching.bulk import services
from matching.bulk.load import output_files
from matching.bulk.models import BulkJob
from matching.core.loading import load_image
from matching.core.signals import query_signals
from matching.engine import find_candidates
from matching.models import Match
from spark.progress import read_progress
from tests.bulk.folders import cropped_turned_jpeg, write
from tests.factories import CollectionFactory
from tests.images import encode, logo_in_scene_jpeg, photo_png, resized_jpeg, transparent_logo, truncated_jpeg

pytestmark = pytest.mark.django_db

PROTECTED = ["coffee", "chelsea", "rocket"]
COPIES = {"copies/coffee small.jpg": "coffee", "copies/chelsea 're-encoded'.jpg": "chelsea"}
UNRELATED = ["unrelated/horse.jpg", "unrelated/coins.jpg", "unrelated/camera.jpg", "unrelated/astronaut.jpg"]


def test_scan_reports_planted_copies_only_and_alerts(org, settings, tmp_path: Path,
                                                     django_capture_on_commit_callbacks):
    settings.IMGPROTECT_BULK_PARTITION_SIZE = 2  # several Parquet files: one can be lost as in a killed run
    collection = CollectionFactory(organisation=org, slug="brand", name="Brand", alert_emails="legal@acme.test")
    for name in PROTECTED:
        data = photo_png(name)
        protection.protected_image_add(collection=collection, key=f"{name}.png", data=data,
                                             loaded=load_image(data), index_now=True)
    crawl = write(tmp_path / "crawl", {
        "copies/coffee small.jpg": resized_jpeg("coffee", 0.5, 70),
        "copies/chelsea 're-encoded'.jpg": resized_jpeg("chelsea", 1.0, 55),
        **{key: resized_jpeg(key.split("/")[1].split(".")[0], 0.8) for key in UNRELATED},
        "broken.jpg": truncated_jpeg(),
    })
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("scan_images", "--org", org.slug, "--spark-master", "local[2]", str(crawl), stdout=out,
                     stderr=io.StringIO())
    job = BulkJob.objects.get()
    assert (job.status, job.kind, job.total, job.done, job.failed) == ("done", "scan", 7, 6, 1)
    assert (job.matched, job.match_reports) == (2, 2)

    matches = Match.objects.filter(organisation=org).select_related("protected_image")
    reported = {(m.suspect_key, m.protected_image.key) for m in matches}
    assert reported == {(f"{crawl}/{key}", f"{name}.png") for key, name in COPIES.items()}
    assert all(m.source_check_id is None and m.verdict in ("exact", "near_duplicate", "modified_copy")
               for m in matches)
    assert "scanned 6, matched 2 (2 new match reports), failed 1 of 7 files" in out.getvalue()
    assert "match copies/coffee small.jpg ~ brand/coffee.png" in out.getvalue()

    # Alerts: one e-mail for the collection, listing both crawled images (not one per match).
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["legal@acme.test"]
    assert "2 new matches in Brand" in mail.outbox[0].subject
    assert "copies/coffee small.jpg" in mail.outbox[0].body and "chelsea 're-encoded'.jpg" in mail.outbox[0].body
    assert set(Match.objects.values_list("alerted", flat=True)) != {None}

    # Loading the scan's output again writes no second report.
    BulkJob.objects.filter(pk=job.pk).update(status="loading")
    services.bulkjob_load(job=job)
    assert Match.objects.count() == 2

    # Killed half-way: the partition holding a copy never committed and the job failed. Resuming computes
    # only that partition's keys, reloads everything, and writes no second report nor a second e-mail.
    lost = next(f for f in output_files(job.work_dir)
                if "copies/coffee small.jpg" in pq.read_table(f, columns=["key"]).column("key").to_pylist())
    lost_keys = pq.read_table(lost, columns=["key"]).num_rows
    lost.unlink()
    BulkJob.objects.filter(pk=job.pk).update(status="failed", error="killed")
    with django_capture_on_commit_callbacks(execute=True):
        job = services.bulkjob_run(job_id=services.bulkjob_resume(job=job, start=False).pk)
    assert job.status == "done", job.error
    progress = read_progress(job.work_dir / "progress.json")
    assert progress is not None and progress["processed"] == lost_keys < 7
    assert (job.total, job.done, job.failed, job.matched, job.match_reports) == (7, 6, 1, 2, 2)
    assert Match.objects.count() == 2 and job.matches.count() == 2 and len(mail.outbox) == 1


def _scan_to_one_match(org, crawl: Path, capture, *, scanned: int) -> Match:  # type: ignore[no-untyped-def]
    """Scan ``crawl`` on local[2]; the job is done, every file scanned, and it wrote one match."""
    with capture(execute=True):
        call_command("scan_images", "--org", org.slug, "--spark-master", "local[2]", str(crawl),
                     stdout=io.StringIO(), stderr=io.StringIO())
    job = BulkJob.objects.get()
    assert (job.status, job.done, job.failed, job.matched) == ("done", scanned, 0, 1), job.error
    return Match.objects.select_related("protected_image").get()


def test_scan_with_the_real_cnn_finds_what_a_check_finds(org, settings, tmp_path: Path,
                                                        django_capture_on_commit_callbacks):
    """The product's CNN on the executors (local[2]): a cropped and turned copy, which hashes alone
    miss, is reported with the check's verdict, region, edit report and an evidence picture."""
    settings.IMGPROTECT_CNN_ENABLED = True
    collection = CollectionFactory(organisation=org, slug="brand", name="Brand")
    for name in ("coffee", "chelsea", "rocket"):
        data = photo_png(name)
        protection.protected_image_add(collection=collection, key=f"{name}.png", data=data,
                                       loaded=load_image(data), index_now=True)
    copy = cropped_turned_jpeg("coffee")
    crawl = write(tmp_path / "crawl", {"found/coffee turned.jpg": copy, "unrelated/horse.jpg": resized_jpeg("horse", 0.8),
                                       "unrelated/astronaut.jpg": resized_jpeg("astronaut", 0.8)})
    # What a check says about the same picture, in-process.
    candidates, _ = find_candidates(organisation_id=org.pk, loaded=load_image(copy), top_k=5)
    checked = [c for c in candidates if c.decision.is_match]
    hashes_only, _ = find_candidates(organisation_id=org.pk, signals=query_signals(load_image(copy)), top_k=5)
    assert [c.image.key for c in checked] == ["coffee.png"] and checked[0].decision.verdict == "modified_copy"
    assert not [c for c in hashes_only if c.decision.is_match]  # the copy is beyond the hashes' reach

    match = _scan_to_one_match(org, crawl, django_capture_on_commit_callbacks, scanned=3)
    assert (match.suspect_key, match.protected_image.key) == (f"{crawl}/found/coffee turned.jpg", "coffee.png")
    assert match.verdict == checked[0].decision.verdict
    assert abs(match.score - checked[0].decision.score) < 0.05
    assert len(match.region["query"]) >= 3 and len(match.region["reference"]) >= 3  # polygons, clipped to the frames
    assert match.edit_report["description"] and abs(abs(match.edit_report["rotation_deg"]) - 7) < 2
    assert match.signal_scores["cnn_score"] > 0.5 and match.signal_scores["inliers"] >= 8
    with match.evidence.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_scan_finds_a_logos_mark_composited_alone_into_a_photo(org, settings, tmp_path: Path,
                                                                  django_capture_on_commit_callbacks):
    """A logo protected as an RGBA PNG, its mark alone pasted at 20 % of a photo's width: the
    executors search the mark's views and look for the mark (the snapshot carries the marks,
    spark/references.py), and report it as a check does, boxed and told as the mark."""
    settings.IMGPROTECT_CNN_ENABLED = True
    collection = CollectionFactory(organisation=org, slug="brand", name="Brand")
    logo = encode(transparent_logo(), "PNG")
    protection.protected_image_add(collection=collection, key="acme.png", data=logo, loaded=load_image(logo),
                                   index_now=True)
    data = photo_png("coffee")
    protection.protected_image_add(collection=collection, key="coffee.png", data=data, loaded=load_image(data),
                                   index_now=True)
    copy, box = logo_in_scene_jpeg()
    crawl = write(tmp_path / "crawl", {"found/acme on a wall.jpg": copy, "unrelated/horse.jpg": resized_jpeg("horse", 0.8)})
    candidates, _ = find_candidates(organisation_id=org.pk, loaded=load_image(copy), top_k=5)
    checked = [c for c in candidates if c.decision.is_match]
    assert [c.image.key for c in checked] == ["acme.png"]  # what a check finds

    match = _scan_to_one_match(org, crawl, django_capture_on_commit_callbacks, scanned=2)
    assert (match.suspect_key, match.protected_image.key) == (f"{crawl}/found/acme on a wall.jpg", "acme.png")
    assert match.verdict == checked[0].decision.verdict == "modified_copy"
    assert match.edit_report["description"].startswith("the mark, at ")
    assert polygon_iou(match.region["query"], box, load_image(copy).image.size) >= 0.5
