"""Stored vectors and the network that made them (matching/reembed.py, matching/index_registry.py).

A new CNN head makes vectors that are not comparable with the old head's: every stored vector
records its network, the CNN index takes only this process's network's, and ``manage.py reembed``
computes the others again (docs/training/embedder.md, "Stored vectors and the network that made them").
"""
from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from catalog.models import ProtectedImage
from catalog.services import index_generation_bump
from matching import protection
from matching.cnn import embedding_model
from matching.core.cnn.embedder import model_id
from matching.core.cnn.head import DEFAULT_HEAD_PATH, HeadWeights, read_head, write_head
from matching.core.loading import load_image
from matching.core.marks import MARK_VIEWS, mark_vector_id
from matching.encodings import embedding_from_bytes, embedding_to_bytes
from matching.engine import get_embedder
from matching.index_registry import IndexRegistry
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import drawn_logo, encode, photo_png

pytestmark = pytest.mark.django_db

OTHER = "0123456789abcdef-57934424"  # what an older head's rows would record


def _protect(collection, key: str, data: bytes) -> ProtectedImage:  # type: ignore[no-untyped-def]
    return protection.protected_image_add(collection=collection, key=key, data=data, loaded=load_image(data),
                                          index_now=True)


def _noise(rows: int, seed: int) -> bytes:
    vectors = np.random.default_rng(seed).normal(size=(rows, 256)).astype(np.float32)
    return embedding_to_bytes(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("reembed", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_indexing_records_the_network_that_made_the_vectors(org):
    image = _protect(CollectionFactory(organisation=org), "coffee.png", photo_png("coffee"))
    assert image.embedding and image.embedding_model == get_embedder().model_id == embedding_model()
    # The head's SHA-256 (as head.npz records it) and the backbone checkpoint's (efficientnet-lite0-57934424).
    assert re.fullmatch(r"[0-9a-f]{16}-57934424", image.embedding_model)
    assert image.embedding_model.startswith(read_head().sha256[:16])
    assert ProtectedImage.objects.get(pk=image.pk).embedding_model == image.embedding_model


def test_the_network_id_changes_with_the_head_and_with_nothing_else(tmp_path: Path):
    same = tmp_path / "same.npz"
    shutil.copy(DEFAULT_HEAD_PATH, same)
    assert model_id(same) == model_id()
    head = read_head()
    arrays = dict(head.arrays)
    arrays["gem/p"] = np.asarray(float(arrays["gem/p"]) + 0.25, dtype=arrays["gem/p"].dtype)
    changed = tmp_path / "changed.npz"
    write_head(changed, HeadWeights(arrays=arrays, meta=dict(head.meta)))
    assert model_id(changed) != model_id() and model_id(changed).endswith("-57934424")
    assert model_id(changed).startswith(read_head(changed).sha256[:16])


def test_vectors_of_another_network_leave_the_cnn_index_until_reembed_computes_them_again(org, settings):
    """A logo (its mark views too) and a photo whose rows say another network made their vectors:
    a process that held them drops them, a new process never takes them, their hashes still match;
    ``reembed --dry-run`` counts them, ``reembed`` computes the same vectors indexing computed."""
    collection = CollectionFactory(organisation=org)
    logo = _protect(collection, "acme.png", encode(drawn_logo(), "PNG"))
    photo = _protect(collection, "coffee.png", photo_png("coffee"))
    assert logo.mark_embeddings and not photo.mark_embeddings
    original = {image.pk: (bytes(image.embedding), bytes(image.mark_embeddings or b"")) for image in (logo, photo)}
    views = [mark_vector_id(logo.pk, slot) for slot in range(MARK_VIEWS)]
    base = Path(settings.IMGPROTECT_INDEX_DIR)
    warm = IndexRegistry(directory=base / "warm")
    held = warm.get(org.pk).vectors
    assert held is not None and photo.pk in held and logo.pk in held and all(v in held for v in views)

    # An older head's rows: other vectors, recorded as another network's ("" : indexed before it was recorded).
    ProtectedImage.objects.filter(pk=photo.pk).update(embedding=_noise(1, 1), embedding_model=OTHER)
    ProtectedImage.objects.filter(pk=logo.pk).update(embedding=_noise(1, 2), mark_embeddings=_noise(MARK_VIEWS, 3),
                                                     embedding_model="")
    index_generation_bump(organisation_id=org.pk)
    for registry in (warm, IndexRegistry(directory=base / "cold")):
        indexes = registry.get(org.pk)
        assert indexes.vectors is None or not any(v in indexes.vectors for v in (photo.pk, logo.pk, *views))
        assert photo.pk in indexes.phash and logo.pk in indexes.phash  # digests and hashes still match

    counted = _run("--dry-run")
    assert "2 image(s) hold vectors of another network or none" in counted and f"{org.slug}: 2" in counted
    assert ProtectedImage.objects.get(pk=photo.pk).embedding_model == OTHER  # a dry run changes nothing

    done = _run()
    assert f"re-embedded 2 image(s); {org.slug}: 2" in done
    for image in ProtectedImage.objects.filter(pk__in=[logo.pk, photo.pk]):
        assert image.embedding_model == embedding_model()
        assert (bytes(image.embedding), bytes(image.mark_embeddings or b"")) == original[image.pk]
    vectors = warm.get(org.pk).vectors  # the generation moved: the warm process takes them
    assert vectors is not None and photo.pk in vectors and logo.pk in vectors and all(v in vectors for v in views)
    (best, score), *_ = vectors.search(embedding_from_bytes(original[photo.pk][0]), 1)[0]
    assert best == photo.pk and score > 0.999
    assert "0 image(s)" in _run("--dry-run")


def test_a_snapshot_of_another_networks_vectors_is_rebuilt_not_loaded(org, settings):
    collection = CollectionFactory(organisation=org)
    photo = _protect(collection, "coffee.png", photo_png("coffee"))
    directory = Path(settings.IMGPROTECT_INDEX_DIR) / "snap"
    IndexRegistry(directory=directory).get(org.pk)
    checkpoint_path = directory / f"org-{org.pk}" / "checkpoint.json"
    checkpoint = json.loads(checkpoint_path.read_text())
    assert checkpoint["vectors"] and checkpoint["embedding_model"] == embedding_model()
    checkpoint["embedding_model"] = OTHER  # as a process of the older head left it
    checkpoint_path.write_text(json.dumps(checkpoint))

    indexes = IndexRegistry(directory=directory).get(org.pk)

    assert indexes.vectors is not None and photo.pk in indexes.vectors
    assert json.loads(checkpoint_path.read_text())["embedding_model"] == embedding_model()  # written again


def test_reembed_reports_what_it_cannot_read_and_does_the_rest(org):
    collection = CollectionFactory(organisation=org)
    lost = _protect(collection, "lost.png", photo_png("rocket"))
    kept = _protect(collection, "kept.png", photo_png("chelsea"))
    other_org = OrganisationFactory(slug="beta")
    theirs = _protect(CollectionFactory(organisation=other_org), "theirs.png", photo_png("astronaut"))
    ProtectedImage.objects.filter(pk__in=[lost.pk, kept.pk, theirs.pk]).update(embedding_model=OTHER)
    default_storage.delete(lost.file.name)

    with pytest.raises(CommandError, match="1 image"):
        _run("--org", org.slug)

    rows = {image.pk: image for image in ProtectedImage.objects.all()}
    assert rows[kept.pk].embedding_model == embedding_model()
    assert rows[lost.pk].embedding_model == OTHER and rows[lost.pk].status == ProtectedImage.Status.INDEXED
    assert rows[theirs.pk].embedding_model == OTHER  # --org: the other organisation is left alone
    assert "1 image(s)" in _run("--dry-run", "--org", other_org.slug)
    assert "re-embedded 1 image(s)" in _run("--org", other_org.slug, "--limit", "1")


def test_reembed_refuses_what_it_cannot_do(org, settings):
    with pytest.raises(CommandError, match="No organisation 'nobody'"):
        _run("--org", "nobody")
    with pytest.raises(CommandError, match="positive"):
        _run("--limit", "0")
    settings.IMGPROTECT_CNN_ENABLED = False
    with pytest.raises(CommandError, match="CNN is disabled"):
        _run()


def test_pictures_indexed_without_the_cnn_are_embedded_when_it_is_on(org, settings):
    settings.IMGPROTECT_CNN_ENABLED = False
    image = _protect(CollectionFactory(organisation=org), "coffee.png", photo_png("coffee"))
    assert image.embedding is None and image.embedding_model == ""
    settings.IMGPROTECT_CNN_ENABLED = True
    assert "re-embedded 1 image(s)" in _run()
    image.refresh_from_db()
    assert image.embedding and image.embedding_model == embedding_model()


def test_a_scanned_suspect_of_another_network_is_counted_and_left_to_its_hashes(org):
    """A scanned suspect keeps no pixels: ``reembed`` cannot embed it again and says so."""
    from matching.models import SuspectSignals

    SuspectSignals.objects.create(organisation=org, suspect_key="crawl/a.jpg", phash_variants=bytes(64),
                                  embedding=_noise(1, 4), embedding_model=OTHER)
    SuspectSignals.objects.create(organisation=org, suspect_key="crawl/b.jpg", phash_variants=bytes(64),
                                  embedding=_noise(1, 5), embedding_model=embedding_model())
    assert "1 kept suspect(s) hold vectors of another network" in _run("--dry-run")
    out = _run()
    assert "re-embedded 0 suspect(s) from their stored uploads; 1 without stored pixels" in out
    assert SuspectSignals.objects.get(suspect_key="crawl/a.jpg").embedding_model == OTHER


def test_the_api_says_whether_the_cnn_searches_for_an_image(org, api, settings):
    image = _protect(CollectionFactory(organisation=org), "coffee.png", photo_png("coffee"))
    detail = f"/api/v1/images/{image.pk}/"
    assert api.get(detail).json()["cnn_searched"] is True
    ProtectedImage.objects.filter(pk=image.pk).update(embedding_model=OTHER)
    assert api.get(detail).json()["cnn_searched"] is False
    assert [row["cnn_searched"] for row in api.get("/api/v1/images/").json()["results"]] == [False]
    _run()
    assert api.get(detail).json()["cnn_searched"] is True
    settings.IMGPROTECT_CNN_ENABLED = False
    assert api.get(detail).json()["cnn_searched"] is None
