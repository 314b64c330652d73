"""Retroactive re-checks: suspects seen before are searched again when images are protected later."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from bench.metrics import polygon_iou
from catalog.models import Organisation
from matching.bulk import services as bulk_services
from matching.bulk.models import BulkJob
from matching.cnn import embedding_model
from matching.core.loading import load_image
from matching.core.signals import query_signals
from matching.models import Check, Match, RecheckMark, SuspectSignals
from matching.retro import NOT_VERIFIED, suspects_recheck
from matching.suspects import suspect_signals_purge
from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import encode, logo_in_scene_jpeg, photo, photo_png, resized_jpeg, transparent_logo

# Transactional, like production: indexing, the re-check and the alerts run on commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def photos(org):  # type: ignore[no-untyped-def]
    return CollectionFactory(organisation=org, slug="photos", alert_emails="legal@acme.test")


def protect(api, collection, name: str) -> int:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/images/", {"collection": collection.pk, "key": f"{name}.png",
                                            "file": SimpleUploadedFile(f"{name}.png", photo_png(name))})
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def check(api, data: bytes, name: str = "suspect.jpg") -> dict:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/checks/?wait=30&complete=true", {"file": SimpleUploadedFile(name, data)},
                        format="multipart")
    assert response.status_code == 200, response.json()
    return response.json()


def cropped_copy(name: str) -> bytes:
    """A modified copy: the middle two thirds, re-encoded (no hash finds it; the CNN and verification do)."""
    image = photo(name)
    w, h = image.size
    return encode(image.crop((w // 6, h // 6, w - w // 6, h - h // 6)), "JPEG", quality=85)


def test_a_suspect_checked_before_its_original_was_protected_is_found_retroactively(org, api, photos):
    protect(api, photos, "coffee")
    beta = OrganisationFactory(slug="beta")
    beta_api = client_for(beta)
    CollectionFactory(organisation=beta, slug="b")
    first = check(api, cropped_copy("chelsea"), "cat.jpg")
    other = check(beta_api, cropped_copy("chelsea"), "their-cat.jpg")  # another organisation's suspect
    assert first["result"]["verdict"] == "none" and not first["matches"]
    kept = SuspectSignals.objects.get(source_check_id=first["id"])
    assert kept.organisation_id == org.pk and kept.embedding and kept.tile_embeddings  # partial pass ran
    assert kept.embedding_model == embedding_model() != ""  # the network that made them
    assert len(kept.phash_variants) == 8 * 8 and mail.outbox == []

    image_id = protect(api, photos, "chelsea")

    match = Match.objects.get(source_check_id=first["id"])
    assert match.found_retroactively and match.protected_image_id == image_id
    assert match.verdict == "modified_copy" and match.region and match.edit_report  # verified on the kept file
    assert match.evidence and default_storage.exists(match.evidence.name)
    assert "verification" not in match.signal_scores
    # Tenant isolation: the other organisation's suspect is never searched for this organisation's image.
    assert not Match.objects.filter(source_check_id=other["id"]).exists()
    assert not Match.objects.filter(organisation=beta).exists()
    # Alerted like any match, and marked.
    assert len(mail.outbox) == 1 and "found retroactively" in mail.outbox[0].subject
    assert "found retroactively" in mail.outbox[0].body and "chelsea.png" in mail.outbox[0].body
    from matching.webhooks import match_data

    assert match_data(match)["found_retroactively"] is True
    listed = api.get("/api/v1/matches/?found_retroactively=true").json()["results"]
    assert [(m["id"], m["found_retroactively"], m["check_id"]) for m in listed] == [(match.pk, True, first["id"])]
    assert api.get("/api/v1/matches/?found_retroactively=false").json()["results"] == []
    # A later task for the same image finds it searched for already; a re-check that does search
    # again (its mark moved back, as after a failed attempt) reports nothing twice and sends nothing.
    assert suspects_recheck(image_ids=[image_id]) == []
    RecheckMark.objects.filter(organisation=org).update(until=timezone.now() - timedelta(days=1))
    assert suspects_recheck(image_ids=[image_id]) == []
    assert RecheckMark.objects.get(organisation=org).until >= Match.objects.get(pk=match.pk).protected_image.indexed_at
    assert Match.objects.filter(organisation=org).count() == 1 and len(mail.outbox) == 1


def test_a_suspects_vectors_of_another_network_are_not_compared_until_reembed_embeds_them_again(org, api, photos):
    """The same cropped copy as above, its kept vectors recorded as another network's (a head changed
    since the check): a new head's vectors are not comparable with them, so the re-check judges the
    suspect on its digests and hashes alone, which do not find this copy, until ``reembed`` embeds
    it again from the stored upload (docs/training/embedder.md)."""
    protect(api, photos, "coffee")
    first = check(api, cropped_copy("chelsea"), "cat.jpg")
    kept = SuspectSignals.objects.get(source_check_id=first["id"])
    assert kept.embedding and kept.tile_embeddings and kept.embedding_model == embedding_model()
    original = bytes(kept.embedding), bytes(kept.tile_embeddings)
    SuspectSignals.objects.filter(pk=kept.pk).update(embedding_model="0123456789abcdef-57934424")

    image_id = protect(api, photos, "chelsea")

    assert not Match.objects.filter(source_check_id=first["id"]).exists() and mail.outbox == []

    # ``reembed`` embeds the suspect again from the check's stored upload, as the check did; the next
    # re-check then finds the copy by its vectors.
    out = io.StringIO()
    call_command("reembed", stdout=out)
    assert "re-embedded 1 suspect(s) from their stored uploads; 0 without stored pixels" in out.getvalue()
    kept.refresh_from_db()
    assert kept.embedding_model == embedding_model()
    assert (bytes(kept.embedding), bytes(kept.tile_embeddings)) == original
    RecheckMark.objects.filter(organisation=org).update(until=timezone.now() - timedelta(days=1))
    assert suspects_recheck(image_ids=[image_id])
    match = Match.objects.get(source_check_id=first["id"])
    assert match.found_retroactively and match.protected_image_id == image_id


def test_a_logos_mark_in_a_photo_checked_before_the_logo_was_protected_is_found_retroactively(org, api, photos,
                                                                                              monkeypatch):
    """The re-check searches the new logo's mark views and looks for its mark, as a check does
    (matching/retro.py): the mark alone, pasted at 20 % of a photo's width, is found and boxed.
    Only sure marks count there: its index holds the new pictures alone, so an unsure mark's crop
    would be "nearest" to one of them for want of the rest (docs/matching.md, "Marks")."""
    from matching import retro

    matchers: list[retro.Matcher] = []

    class Recorded(retro.Matcher):  # type: ignore[misc]
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            matchers.append(self)

    monkeypatch.setattr(retro, "Matcher", Recorded)
    protect(api, photos, "coffee")
    copy, box = logo_in_scene_jpeg()
    first = check(api, copy, "wall.jpg")
    assert first["result"]["verdict"] == "none" and not first["matches"]
    assert SuspectSignals.objects.get(source_check_id=first["id"]).tile_embeddings  # the partial pass ran

    response = api.post("/api/v1/images/", {"collection": photos.pk, "key": "acme.png",
                                            "file": SimpleUploadedFile("acme.png", encode(transparent_logo(), "PNG"))})
    assert response.status_code == 201, response.json()

    match = Match.objects.get(source_check_id=first["id"])
    assert match.found_retroactively and match.protected_image_id == response.json()["id"]
    assert match.verdict == "modified_copy" and match.edit_report["description"].startswith("the mark, at ")
    assert polygon_iou(match.region["query"], box, load_image(copy).image.size) >= 0.5
    assert len(mail.outbox) == 1 and "found retroactively" in mail.outbox[0].subject
    assert matchers and not any(m.unsure_marks for m in matchers)


def test_without_the_suspects_file_the_match_is_decided_on_signals_and_says_so(org, api, photos):
    protect(api, photos, "coffee")
    first = check(api, resized_jpeg("rocket", 0.5, 60))
    assert first["result"]["verdict"] == "none"
    default_storage.delete(Check.objects.get(pk=first["id"]).file.name)  # the upload is no longer kept

    protect(api, photos, "rocket")

    match = Match.objects.get(source_check_id=first["id"])
    assert match.found_retroactively and match.verdict == "near_duplicate"
    assert match.signal_scores["verification"] == NOT_VERIFIED and not match.evidence and match.region is None
    body = api.get(f"/api/v1/matches/{match.pk}/").json()
    assert body["found_retroactively"] is True and body["signal_scores"]["verification"] == NOT_VERIFIED


def test_retention_zero_keeps_nothing_and_finds_nothing(org, api, photos):
    protect(api, photos, "coffee")
    response = api.patch("/api/v1/organisation/", {"suspect_retention_days": 0}, format="json")
    assert response.status_code == 200 and response.json()["suspect_retention_days"] == 0
    check(api, resized_jpeg("rocket", 0.5, 60))
    assert not SuspectSignals.objects.exists()
    protect(api, photos, "rocket")
    assert not Match.objects.exists() and mail.outbox == []


def test_retention_is_validated_and_set_by_admins_only(org, api):
    for bad in (-1, 3651, "90", None, 1.5, True):
        response = api.patch("/api/v1/organisation/", {"suspect_retention_days": bad}, format="json")
        assert response.status_code == 400, bad
        assert response.json()["error"] == "invalid" and "suspect_retention_days" in response.json()["fields"]
    # A PATCH changes what it sends: an empty one changes nothing (the fuzz test's schema-valid request).
    before = api.get("/api/v1/organisation/").json()
    assert api.patch("/api/v1/organisation/", {}, format="json").json() == before
    member = client_for(org, "member")
    assert member.patch("/api/v1/organisation/", {"suspect_retention_days": 5}, format="json").status_code == 403
    org.refresh_from_db()
    assert org.suspect_retention_days == 90
    assert api.patch("/api/v1/organisation/", {"suspect_retention_days": 7}, format="json").status_code == 200
    assert member.get("/api/v1/organisation/").json()["suspect_retention_days"] == 7


def _kept(organisation: Organisation, key: str, age_days: float) -> SuspectSignals:
    row = SuspectSignals.objects.create(organisation=organisation, suspect_key=key, phash_variants=b"\0" * 64)
    SuspectSignals.objects.filter(pk=row.pk).update(created=timezone.now() - timedelta(days=age_days))
    return row


def test_the_purge_deletes_what_each_organisation_no_longer_keeps(org):
    org.suspect_retention_days = 30
    org.save()
    none = OrganisationFactory(slug="none", suspect_retention_days=0)
    old, fresh = _kept(org, "s3://a/old.jpg", 31), _kept(org, "s3://a/new.jpg", 29)
    _kept(none, "s3://b/x.jpg", 0)
    assert suspect_signals_purge() == 2
    assert list(SuspectSignals.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not SuspectSignals.objects.filter(pk=old.pk).exists()
    schedule = settings.CELERY_BEAT_SCHEDULE["purge-suspect-signals"]
    assert schedule["task"] == "workers.tasks.purge_suspect_signals"
    from workers.tasks import purge_suspect_signals

    assert purge_suspect_signals() == 0


def test_scanned_images_are_searched_too(org, api, photos, tmp_path: Path):
    from tests.bulk.test_services import write_output

    protect(api, photos, "coffee")
    job = BulkJob.objects.create(organisation=org, kind="scan", source=str(tmp_path / "crawl"), status="loading",
                                 attempts=1)
    data = resized_jpeg("astronaut", 0.5, 60)
    signals = query_signals(load_image(data))
    row = {"key": "pages/a.jpg", "size": len(data), "sha256_bytes": signals["sha256_bytes"],
           "sha256_pixels": signals["sha256_pixels"], "phash": signals["phash"], "width": signals["width"],
           "height": signals["height"], "format": signals["format"], "signals": json.dumps(signals)}
    write_output(job, [row])
    bulk_services.bulkjob_load(job=job)
    kept = SuspectSignals.objects.get(organisation=org, source_check__isnull=True)
    assert kept.suspect_key.endswith("crawl/pages/a.jpg") and not Match.objects.exists()

    protect(api, photos, "astronaut")

    match = Match.objects.get(suspect_key=kept.suspect_key)
    assert match.found_retroactively and match.source_check is None and match.verdict == "near_duplicate"
    assert match.signal_scores["verification"] == NOT_VERIFIED  # a scan keeps no pixels
    assert len(mail.outbox) == 1 and "found retroactively" in mail.outbox[0].subject


def test_one_pass_over_the_suspects_serves_every_image_of_an_upload(org, photos, monkeypatch, settings):
    from matching import retro
    from matching.protection import protected_image_add
    from matching.suspects import suspect_signals_keep_scan

    settings.IMGPROTECT_CNN_ENABLED = False  # hashes find this copy; no model to load
    data = resized_jpeg("rocket", 0.5, 60)
    assert suspect_signals_keep_scan(organisation_id=org.pk, collection_id=None,
                                     scanned=[("s3://crawl/rocket.jpg", query_signals(load_image(data)))]) == 1
    queued: list[object] = []  # the re-check tasks the two images queue, held back
    monkeypatch.setattr("matching.protection.enqueue_on_commit", lambda name, *args, **kw: queued.append(args))
    images = [protected_image_add(collection=photos, key=f"{name}.png", data=photo_png(name),
                                  loaded=load_image(photo_png(name)), index_now=True) for name in ("coffee", "rocket")]
    assert len(queued) == 2
    passes: list[list[int]] = []
    real = retro._recheck_organisation
    monkeypatch.setattr(retro, "_recheck_organisation",
                        lambda organisation, pending: passes.append([i.pk for i in pending]) or real(organisation, pending))

    found = suspects_recheck(image_ids=[images[0].pk])  # the first task to run takes the whole upload
    assert suspects_recheck(image_ids=[images[1].pk]) == []  # the second finds its image searched for
    assert passes == [[images[0].pk, images[1].pk]]
    assert list(Match.objects.filter(pk__in=found).values_list("protected_image__key", "found_retroactively")) == [
        ("rocket.png", True)]


def test_without_kept_suspects_a_recheck_computes_nothing(org, api, photos, monkeypatch):
    """Indexing pays nothing for re-checks while the organisation has no suspects to search."""
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the new images were prepared for a search with no suspects")

    monkeypatch.setattr("matching.retro._new_references", fail)
    image_id = protect(api, photos, "coffee")  # the re-check runs on commit (eager tasks)
    assert suspects_recheck(image_ids=[image_id]) == []
    assert RecheckMark.objects.filter(organisation=org).exists()


def test_a_load_larger_than_one_pass_is_rechecked_whole_by_passes_that_queue_each_other(org, photos, monkeypatch,
                                                                                         settings):
    """A bulk load queues one re-check (matching/bulk/load.py); a pass takes MAX_IMAGES_PER_PASS
    images and queues the next, so every image of the load is searched for, once, and an instant
    that several images share is never split between two passes."""
    from datetime import datetime, timezone as tz

    from catalog.models import ProtectedImage
    from matching import retro
    from matching.protection import protected_image_add

    settings.IMGPROTECT_CNN_ENABLED = False
    images = [protected_image_add(collection=photos, key=f"{n}.png", data=photo_png(name),
                                  loaded=load_image(photo_png(name)), index_now=True)
              for n, name in enumerate(("coffee", "rocket", "chelsea", "astronaut", "camera"))]
    # Indexed at four instants, two images at the third; the upload's own re-checks are held back.
    instants = [datetime(2026, 1, 1, 0, 0, s, tzinfo=tz.utc) for s in (1, 2, 3, 3, 4)]
    for image, at in zip(images, instants, strict=True):
        ProtectedImage.objects.filter(pk=image.pk).update(indexed_at=at)
    RecheckMark.objects.update_or_create(organisation=org, defaults={"until": datetime(2026, 1, 1, tzinfo=tz.utc)})
    monkeypatch.setattr(retro, "MAX_IMAGES_PER_PASS", 3)
    queued: list[list[int]] = []
    monkeypatch.setattr(retro, "enqueue_on_commit", lambda name, ids, **kw: queued.append(ids))
    passes: list[list[int]] = []
    monkeypatch.setattr(retro, "_recheck_organisation",
                        lambda organisation, pending: passes.append([i.pk for i in pending]) or [])

    suspects_recheck(image_ids=[images[0].pk])
    # Three fit, but the third instant holds two images: the pass stops before it.
    assert passes == [[images[0].pk, images[1].pk]] and queued == [[images[2].pk]]
    suspects_recheck(image_ids=queued[-1])
    assert passes[-1] == [images[2].pk, images[3].pk, images[4].pk] and len(queued) == 1  # the rest fit
    assert suspects_recheck(image_ids=[images[4].pk]) == [] and len(passes) == 2  # nothing left twice
