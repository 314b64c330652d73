"""scan_images through Spark: match reports (and alerts) for planted copies, none for unrelated images."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command

from matching import protection
from matching.bulk import services
from matching.bulk.models import BulkJob
from matching.core.loading import load_image
from matching.models import Match
from tests.bulk.folders import write
from tests.factories import CollectionFactory
from tests.images import photo_png, resized_jpeg, truncated_jpeg

pytestmark = pytest.mark.django_db

PROTECTED = ["coffee", "chelsea", "rocket"]
COPIES = {"copies/coffee small.jpg": "coffee", "copies/chelsea 're-encoded'.jpg": "chelsea"}
UNRELATED = ["unrelated/horse.jpg", "unrelated/moon.jpg", "unrelated/camera.jpg", "unrelated/astronaut.jpg"]


def test_scan_reports_planted_copies_only_and_alerts(org, tmp_path: Path, django_capture_on_commit_callbacks):
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

    # Alerts went out as for checks: to the collection's recipients, naming the crawled image.
    assert mail.outbox and mail.outbox[0].to == ["legal@acme.test"]
    assert "copies/coffee small.jpg" in "".join(m.body for m in mail.outbox)
    assert set(Match.objects.values_list("alerted", flat=True)) != {None}

    # Loading the scan's output again writes no second report.
    BulkJob.objects.filter(pk=job.pk).update(status="loading")
    services.bulkjob_load(job=job)
    assert Match.objects.count() == 2
