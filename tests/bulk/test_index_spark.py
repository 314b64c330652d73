"""index_images through Spark local[2] for real: exact counts, per-file reasons, keys kept, index extended.

One Spark run serves every check (the JVM start dominates the cost), so the
checks are functions called by one test rather than tests of their own.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from catalog.models import Collection, Organisation, ProtectedImage
from matching.bulk import services
from matching.bulk.models import BulkJob, BulkJobError
from matching.core.loading import load_image
from matching.core.signals import compute_signals
from matching.cnn import embedding_model
from matching.engine import find_candidates
from matching.index_registry import registry
from tests.bulk.folders import BAD, GOOD, MAX_BYTES, good_and_bad
from tests.images import photo_png, resized_jpeg

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_index_images_through_spark(settings, tmp_path: Path, monkeypatch, admin_client):
    settings.IMGPROTECT_MAX_UPLOAD_BYTES = MAX_BYTES
    src = good_and_bad(tmp_path / "src")
    (src / "dup").mkdir()
    (src / "dup" / "coffee again.png").write_bytes(photo_png("coffee"))  # the same picture, a second key
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out, err = io.StringIO(), io.StringIO()
    call_command("index_images", "--org", "acme", "--collection", "Brand photos", "--spark-master", "local[2]",
                 str(src), stdout=out, stderr=err)
    indexed = {"src": src, "out": out.getvalue(), "err": err.getvalue(), "terminal": terminal.getvalue()}
    check_summary_and_per_file_errors_follow_the_command_line_contract(indexed)
    check_rows_keys_files_and_job_are_exact(indexed)
    check_loaded_images_are_searchable_and_the_snapshot_is_saved(settings)
    check_loading_the_same_output_again_changes_nothing()
    check_admin_shows_progress_and_errors(admin_client)


def check_summary_and_per_file_errors_follow_the_command_line_contract(indexed: dict) -> None:
    failed = len(BAD) + 1
    total = len(GOOD) + failed
    assert f"indexed {len(GOOD)}, unchanged 0, failed {failed} of {total} files into acme/brand-photos" in indexed["out"]
    for key in BAD:
        assert f"skipped {key}: " in indexed["err"]
    assert "skipped dup/coffee again.png: The same picture is already protected in this collection as 'coffee.png'" \
        in indexed["err"]
    # The live bar: redrawn in place on the terminal while Spark runs, ending at the total.
    assert indexed["terminal"].count("\r[") >= 2 and f"{total}/{total}" in indexed["terminal"]


def check_rows_keys_files_and_job_are_exact(indexed: dict) -> None:
    collection = Collection.objects.get(organisation__slug="acme", slug="brand-photos")
    images = {image.key: image for image in ProtectedImage.objects.filter(collection=collection)}
    assert set(images) == set(GOOD)  # spaces, quotes, unicode and a leading space kept exactly
    for key, image in images.items():
        assert image.status == "indexed" and image.phash is not None and image.signals["phash"]
        source_bytes = (indexed["src"] / key).read_bytes()
        with default_storage.open(image.file.name, "rb") as fh:
            assert fh.read() == source_bytes
        assert image.sha256_bytes == compute_signals(load_image(source_bytes))["sha256_bytes"]
    job = BulkJob.objects.get()
    assert (job.status, job.kind, job.total, job.done, job.failed, job.skipped) == (
        "done", "index", len(GOOD) + len(BAD) + 1, len(GOOD), len(BAD) + 1, 0)
    assert job.spark_app_id.startswith("local-") and "imgprotect-bulk: done" in job.log_tail
    codes = dict(BulkJobError.objects.filter(job=job).values_list("key", "code"))
    assert codes == {**{k: code for k, (_, code) in BAD.items()}, "dup/coffee again.png": "duplicate_image"}


def check_loaded_images_are_searchable_and_the_snapshot_is_saved(settings) -> None:  # type: ignore[no-untyped-def]
    organisation = Organisation.objects.get(slug="acme")
    assert organisation.index_generation > 0
    assert (Path(settings.IMGPROTECT_INDEX_DIR) / f"org-{organisation.pk}" / "checkpoint.json").exists()
    query = compute_signals(load_image(resized_jpeg("chelsea", 0.5, 60)))
    candidates, _ = find_candidates(organisation_id=organisation.pk, signals=query, top_k=3)
    assert candidates[0].image.key == "sub dir/chelsea 'q' \"qq\".jpg" and candidates[0].decision.is_match


def check_loading_the_same_output_again_changes_nothing() -> None:
    job = BulkJob.objects.get()
    before = (ProtectedImage.objects.count(), BulkJobError.objects.count())
    BulkJob.objects.filter(pk=job.pk).update(status="loading")
    services.bulkjob_load(job=job)
    assert (ProtectedImage.objects.count(), BulkJobError.objects.count()) == before


def check_admin_shows_progress_and_errors(admin_client) -> None:  # type: ignore[no-untyped-def]
    job = BulkJob.objects.get()
    page = admin_client.get("/admin/bulk/bulkjob/").content.decode()
    assert "<progress" in page and "100%" in page
    detail = admin_client.get(f"/admin/bulk/bulkjob/{job.pk}/change/").content.decode()
    assert "imgprotect-bulk: done" in detail and f"{len(BAD) + 1} file(s)" in detail
    errors = admin_client.get(f"/admin/bulk/bulkjoberror/?job__id__exact={job.pk}")
    assert errors.status_code == 200 and "bad/truncated.jpg" in errors.content.decode()


def test_a_logo_indexed_through_spark_keeps_its_mark_and_is_found_in_a_scene(org, settings, tmp_path: Path):
    """The real CNN on the executors (local[2]): a logo uploaded as an RGBA PNG is stored with its
    mark, the mark's place and its views' embeddings, as the in-process path stores them, so a
    check finds its mark composited alone into a photo, boxed and told as the mark."""
    from matching.core.marks import MARK_VIEWS
    from matching.encodings import embedding_from_bytes, embeddings_from_bytes
    from matching.protection import protection_flags, reference_signals
    from tests.bulk.folders import write
    from tests.images import encode, logo_in_scene_jpeg, transparent_logo
    from bench.metrics import polygon_iou

    settings.IMGPROTECT_CNN_ENABLED = True
    logo = encode(transparent_logo(), "PNG")
    src = write(tmp_path / "src", {"acme.png": logo, "coffee.png": photo_png("coffee")})
    call_command("index_images", "--org", org.slug, "--collection", "Brand", "--spark-master", "local[2]", str(src),
                 stdout=io.StringIO(), stderr=io.StringIO())
    images = {image.key: image for image in ProtectedImage.objects.filter(organisation=org)}
    assert set(images) == {"acme.png", "coffee.png"}
    acme, expected = images["acme.png"], reference_signals(load_image(logo))
    assert acme.mark.name and acme.mark_info == expected.mark_info and acme.mark_info["source"] == "alpha"
    with default_storage.open(acme.mark.name, "rb") as fh:
        assert fh.read() == expected.mark_png
    dim = len(embedding_from_bytes(acme.embedding))
    views = embeddings_from_bytes(acme.mark_embeddings, dim)
    wanted = embeddings_from_bytes(expected.mark_embeddings, dim)
    assert views.shape == (MARK_VIEWS, dim) and float((views * wanted).sum(axis=1).min()) > 0.99
    assert acme.keypoint_count == expected.keypoints
    # The executors record the network that made the vectors, as the in-process path does: the
    # service's CNN index takes them (docs/training/embedder.md).
    assert acme.embedding_model == expected.embedding_model == embedding_model() != ""
    assert registry.get(org.pk).vectors is not None and acme.pk in registry.get(org.pk).vectors
    assert acme.protection_flags == [f.as_json() for f in protection_flags(load_image(logo), expected)]
    assert not images["coffee.png"].mark and images["coffee.png"].mark_info is None

    copy, box = logo_in_scene_jpeg()
    candidates, _ = find_candidates(organisation_id=org.pk, loaded=load_image(copy), top_k=5)
    found = [c for c in candidates if c.decision.is_match]
    assert [c.image.key for c in found] == ["acme.png"] and found[0].decision.verdict == "modified_copy"
    assert found[0].decision.edit["description"].startswith("the mark, at ")
    assert polygon_iou(found[0].decision.region["query"], box, load_image(copy).image.size) >= 0.5
