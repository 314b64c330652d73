"""Deleting an image, a collection or an organisation leaves no byte of the picture behind (catalog/deletion.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from catalog import services
from catalog.models import Collection, Membership, Organisation, ProtectedImage
from matching.bulk.models import BulkJob
from matching.models import Check, Match
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.images import photo_png

# Transactional: indexing, matching and the deletion of files run on commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

DOOMED = photo_png("coffee")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def data_dirs(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_BULK_WORK_DIR = tmp_path / "bulk"
    return [Path(settings.MEDIA_ROOT), Path(settings.IMGPROTECT_INDEX_DIR), Path(settings.IMGPROTECT_BULK_WORK_DIR)]


@pytest.fixture
def world(org, data_dirs):  # type: ignore[no-untyped-def]
    """The doomed picture protected, matched by an exact copy (evidence drawn), thumbnailed and bulk-indexed;
    and a kept picture in another collection with a check of its own."""
    api = client_for(org, "owner")
    logos = api.post("/api/v1/collections/", {"name": "Logos"}).json()["id"]
    kept = api.post("/api/v1/collections/", {"name": "Kept"}).json()["id"]
    doomed = api.post("/api/v1/images/", {"collection": logos, "file": SimpleUploadedFile("c.png", DOOMED)}).json()
    api.post("/api/v1/images/", {"collection": kept, "file": SimpleUploadedFile("r.png", photo_png("rocket"))})
    copy = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("copy.png", DOOMED)}).json()
    other = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("r.png", photo_png("rocket"))}).json()
    assert copy["matches"][0]["image_id"] == doomed["id"] and copy["matches"][0]["evidence_url"]
    assert other["matches"][0]["key"] == "r.png"
    # A thumbnail in the cache, and a bulk job's work directory for the collection.
    user = UserFactory(username="owner-user")
    Membership.objects.create(user=user, organisation=org, role="owner")
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    assert browser.get(f"/o/acme/images/{doomed['id']}/file/?size=thumb").status_code == 200
    job = BulkJob.objects.create(organisation=org, collection_id=logos, kind="index", source="/x", status="done")
    job.work_dir.mkdir(parents=True)
    (job.work_dir / "part-0.parquet").write_bytes(b"rows: keys, hashes, stored names")
    image = ProtectedImage.objects.get(pk=doomed["id"])
    derived = {image.file.name, image.features.name, Match.objects.get(protected_image=image).evidence.name,
               Check.objects.get(pk=copy["id"]).file.name}
    assert all(derived) and Path(data_dirs[1], f"org-{org.pk}").is_dir()
    return {"api": api, "image": image, "collection": Collection.objects.get(pk=logos), "derived": derived,
            "job": job, "copy": copy["id"], "other": other["id"], "kept": kept}


def leftovers(dirs: list[Path], world, *, collection_gone: bool = True) -> list[str]:  # type: ignore[no-untyped-def]
    """Every file under the data directories that holds the doomed picture or was made for it."""
    found = []
    for root in dirs:
        for path in (p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
            data = path.read_bytes()
            if sha(data) == sha(DOOMED) or DOOMED[:64] in data:
                found.append(f"{path}: the picture's bytes")
            if any(str(path).endswith(name) for name in world["derived"]):
                found.append(f"{path}: made for the deleted picture")
            if path.suffix == ".npz":  # index snapshots: no entry of the deleted image, not even a tombstone
                with np.load(path) as arrays:
                    for key in arrays.files:
                        if "ids" in key and world["image"].pk in arrays[key]:
                            found.append(f"{path}:{key}: the deleted image's index entry")
    if collection_gone and world["job"].work_dir.exists():
        found.append(f"{world['job'].work_dir}: the bulk job's work directory")
    return found


def thumbnails_cached(world) -> bool:  # type: ignore[no-untyped-def]
    from django.core.cache import cache

    from catalog.files import rendition_cache_keys

    return any(cache.get(key) is not None for key in rendition_cache_keys(world["image"].file.name))


def test_finding_12_deleting_an_image_leaves_no_byte_of_it(world, data_dirs):
    assert leftovers(data_dirs, world) and thumbnails_cached(world)  # the check below can see them
    assert world["api"].delete(f"/api/v1/images/{world['image'].pk}/").status_code == 204
    # The next check of this organisation writes a fresh snapshot, without the image.
    world["api"].post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("r.png", photo_png("rocket"))})
    assert leftovers(data_dirs, world, collection_gone=False) == [] and not thumbnails_cached(world)
    assert not Check.objects.filter(pk=world["copy"]).exists()  # it matched only the deleted picture
    assert Check.objects.filter(pk=world["other"]).exists() and Match.objects.filter(source_check=world["other"])


def test_finding_12_deleting_a_collection_leaves_no_byte_of_it(world, data_dirs):
    assert world["api"].delete(f"/api/v1/collections/{world['collection'].pk}/").status_code == 204
    world["api"].post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("r.png", photo_png("rocket"))})
    assert leftovers(data_dirs, world) == [] and not thumbnails_cached(world)
    assert not Check.objects.filter(pk=world["copy"]).exists() and Check.objects.filter(pk=world["other"]).exists()
    assert ProtectedImage.objects.filter(collection_id=world["kept"]).count() == 1


def test_finding_12_deleting_an_organisation_in_the_admin_leaves_nothing_of_it(world, data_dirs, client, org):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("root", password="pw-secret-123", is_staff=True, is_superuser=True)
    client.login(username="root", password="pw-secret-123")
    response = client.post(f"/admin/catalog/organisation/{org.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not Organisation.objects.filter(pk=org.pk).exists()
    assert leftovers(data_dirs, world) == [] and not thumbnails_cached(world)
    media = Path(data_dirs[0])
    assert not [p for p in media.rglob("*") if p.is_file()]  # every picture, check and evidence file
    assert not Path(data_dirs[1], f"org-{org.pk}").exists()


def test_a_delete_that_rolls_back_keeps_every_file(world, data_dirs):
    before = sorted(p for root in data_dirs for p in root.rglob("*") if p.is_file())
    with pytest.raises(RuntimeError), transaction.atomic():
        services.collection_delete(collection=world["collection"])
        raise RuntimeError("the request failed after the delete")
    assert ProtectedImage.objects.filter(pk=world["image"].pk).exists()
    assert sorted(p for root in data_dirs for p in root.rglob("*") if p.is_file()) == before


def test_finding_12_deleting_an_image_on_s3_storage_leaves_no_object_of_it(org, settings, monkeypatch):
    """The same on S3 (moto's server on loopback, through django-storages): list the bucket after deleting."""
    from tests.bulk.test_s3_spark import s3_storage
    from tests.spark.s3server import s3_server

    with s3_server(monkeypatch) as s3:
        s3.bucket("media")
        settings.STORAGES = s3_storage(s3.endpoint)
        earlier = set(s3.keys("media"))  # the loopback S3 server may outlive one test: look at ours only
        api = client_for(org, "owner")
        collection = api.post("/api/v1/collections/", {"name": "Logos"}).json()["id"]
        doomed = api.post("/api/v1/images/", {"collection": collection,
                                              "file": SimpleUploadedFile("c.png", DOOMED)}).json()["id"]
        kept = api.post("/api/v1/images/", {"collection": collection,
                                            "file": SimpleUploadedFile("r.png", photo_png("rocket"))}).json()["id"]
        copy = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("copy.png", DOOMED)}).json()
        assert copy["matches"][0]["evidence_url"]
        before = sorted(set(s3.keys("media")) - earlier)
        assert any("/evidence/" in key for key in before) and any(key.startswith("imgprotect/checks/") for key in before)
        assert api.delete(f"/api/v1/images/{doomed}/").status_code == 204
        left = sorted(set(s3.keys("media")) - earlier)
        kept_image = ProtectedImage.objects.get(pk=kept)
        assert left == sorted(f"imgprotect/{name}" for name in (kept_image.file.name, kept_image.features.name))
        assert all(sha(s3.get("media", key)) != sha(DOOMED) for key in left)


@pytest.mark.parametrize("via", ["api", "portal"])
def test_promise_deleting_a_collection_with_images_forgets_them(world, data_dirs, via):
    """Through the API or the portal: the rows, the files and the index entries go, and a copy of a
    deleted picture no longer matches (tests/catalog/test_deletion.py covers the files; this adds the
    portal path and the matching)."""
    from django.test import Client

    from tests.images import resized_jpeg

    api, collection = world["api"], world["collection"]
    copy = resized_jpeg("coffee", 0.5, 60)
    before = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("copy.jpg", copy)}).json()
    assert before["matches"] and before["matches"][0]["image_id"] == world["image"].pk  # it matched before
    if via == "api":
        assert api.delete(f"/api/v1/collections/{collection.pk}/").status_code == 204
    else:
        browser = Client()
        browser.force_login(UserFactory(username="owner-user"))
        response = browser.post(f"/o/acme/collections/{collection.pk}/delete/")
        assert response.status_code == 302, response.content[:300]
    assert not Collection.objects.filter(pk=collection.pk).exists()
    assert not ProtectedImage.objects.filter(collection_id=collection.pk).exists()
    after = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("copy.jpg", copy)}).json()
    assert after["status"] == "done" and after["result"]["verdict"] == "none" and after["matches"] == []
    assert leftovers(data_dirs, world) == [] and not thumbnails_cached(world)
