"""Promises of the matching service, each tested by its effect: a collection's tightened threshold
changes the verdict, and a damaged index snapshot is rebuilt from the database."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageEnhance

from matching.index_registry import IndexRegistry
from tests.factories import CollectionFactory
from tests.images import encode, photo, photo_png, resized_jpeg

# Transactional, like production: tasks enqueued on commit run when the request commits.
pytestmark = pytest.mark.django_db(transaction=True)


def _protect(api, collection, names):  # type: ignore[no-untyped-def]
    ids = []
    for name in names:
        response = api.post("/api/v1/images/", {"collection": collection.pk, "key": f"{name}.png",
                                                "file": SimpleUploadedFile(f"{name}.png", photo_png(name))})
        assert response.status_code == 201, response.json()
        ids.append(response.json()["id"])
    return ids


def _check(api, data: bytes) -> dict:  # type: ignore[type-arg]
    response = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("suspect.jpg", data)},
                        format="multipart")
    assert response.status_code == 200, response.json()
    return response.json()


def test_promise_collection_thresholds_tighten_the_verdict(api, org):
    collection = CollectionFactory(organisation=org, slug="brand")
    _protect(api, collection, ["coffee", "rocket"])
    contrasty = ImageEnhance.Contrast(photo("rocket")).enhance(1.3)
    # Two pHash bits and about eight PDQ bits off the original: a near duplicate by either hash.
    suspect = encode(contrasty.resize((320, 213), Image.Resampling.LANCZOS), "JPEG", quality=50)
    loose = _check(api, suspect)
    assert loose["result"]["verdict"] == "near_duplicate", loose["result"]
    assert loose["matches"][0]["signal_scores"]["phash_distance"] >= 1

    response = api.patch(f"/api/v1/collections/{collection.pk}/", {"phash_max_distance": 0}, format="json")
    assert response.status_code == 200 and response.json()["phash_max_distance"] == 0
    tight = _check(api, suspect)
    # The same suspect is no longer a near duplicate of this collection's picture: a weaker verdict at most.
    assert tight["result"]["verdict"] != "near_duplicate", tight["result"]
    assert all(m["verdict"] != "near_duplicate" for m in tight["matches"])
    # A looser setting is never applied: the service's threshold stays the ceiling.
    api.patch(f"/api/v1/collections/{collection.pk}/", {"phash_max_distance": 64}, format="json")
    assert _check(api, suspect)["result"]["verdict"] == "near_duplicate"


@pytest.mark.parametrize(("damaged", "damage"), [
    ("phash.npz", "garbage"), ("pdq.npz", "truncate"), ("checkpoint.json", "garbage"), ("vectors.faiss", "truncate"),
])
def test_promise_a_corrupt_index_snapshot_is_rebuilt_from_the_database(api, org, settings, caplog, damaged, damage):
    collection = CollectionFactory(organisation=org)
    ids = _protect(api, collection, ["coffee", "rocket", "chelsea"])
    directory = Path(settings.IMGPROTECT_INDEX_DIR) / "promise"
    IndexRegistry(directory=directory).get(org.pk)  # writes the snapshot
    snapshot = directory / f"org-{org.pk}"
    target = snapshot / damaged
    if not target.exists():
        pytest.fail(f"no {damaged} in the snapshot: {sorted(p.name for p in snapshot.iterdir())}")
    good = target.read_bytes()
    target.write_bytes(b"\x00garbage\xff" * 10 if damage == "garbage" else good[: len(good) // 2])

    with caplog.at_level(logging.WARNING, logger="matching.index_registry"):
        indexes = IndexRegistry(directory=directory).get(org.pk)  # a fresh process: reads the snapshot
    assert "rebuilding" in caplog.text
    assert all(pk in indexes.phash and pk in indexes.pdq for pk in ids)
    if indexes.vectors is not None:
        assert len(indexes.vectors) == len(ids)
    # A good snapshot was written again: the next process loads it without rebuilding.
    assert target.read_bytes() != good[: len(good) // 2] and b"garbage" not in target.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="matching.index_registry"):
        again = IndexRegistry(directory=directory).get(org.pk)
    assert "rebuilding" not in caplog.text and all(pk in again.phash for pk in ids)
    # And the service still answers from it: a copy is found.
    settings.IMGPROTECT_INDEX_DIR = str(directory.parent)
    body = _check(api, resized_jpeg("rocket", 0.5, 60))
    assert body["result"]["verdict"] == "near_duplicate" and body["matches"][0]["key"] == "rocket.png"
