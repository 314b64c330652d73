"""The index registry's snapshots (matching/index_registry.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catalog import services
from matching import protection
from matching.core.loading import load_image
from matching.index_registry import IndexRegistry
from tests.factories import CollectionFactory
from tests.images import photo_png

pytestmark = pytest.mark.django_db


def test_finding_12_a_process_that_saw_a_deletion_writes_no_entry_of_the_deleted_image(org, settings):
    """Another worker holds the indexes in memory when an image is deleted; its next snapshot must not keep
    the deleted image's entry, not even as a tombstone."""
    collection = CollectionFactory(organisation=org)
    images = [protection.protected_image_add(collection=collection, key=name, data=photo_png(name),
                                             loaded=load_image(photo_png(name)), index_now=True)
              for name in ("coffee", "rocket", "chelsea", "astronaut", "camera", "horse", "coins")]  # 1 in 7: no compaction
    worker = IndexRegistry(directory=Path(settings.IMGPROTECT_INDEX_DIR) / "worker")
    assert images[0].pk in worker.get(org.pk).phash
    deleted = images[0].pk
    services.protected_image_delete(image=images[0])
    indexes = worker.get(org.pk)
    assert deleted not in indexes.phash and images[1].pk in indexes.phash and images[2].pk in indexes.pdq
    snapshots = list((Path(settings.IMGPROTECT_INDEX_DIR) / "worker").rglob("*.npz"))
    assert snapshots
    for path in snapshots:
        with np.load(path) as arrays:
            for key in (k for k in arrays.files if "ids" in k):
                assert deleted not in arrays[key], (path.name, key)


def test_a_logos_mark_views_are_indexed_with_it_and_leave_with_it(org, settings):
    """A logo on a flat tile gets its mark's views in the vector index, under ids that map back to it
    (matching/core/marks.py); deleting the logo removes them; a photo adds none."""
    from matching.core.marks import MARK_VIEWS, mark_vector_id, vector_reference
    from tests.images import drawn_logo, encode

    collection = CollectionFactory(organisation=org)
    logo_png = encode(drawn_logo(), "PNG")
    logo = protection.protected_image_add(collection=collection, key="acme.png", data=logo_png,
                                          loaded=load_image(logo_png), index_now=True)
    photo = protection.protected_image_add(collection=collection, key="coffee.png", data=photo_png("coffee"),
                                           loaded=load_image(photo_png("coffee")), index_now=True)
    assert logo.mark_info["source"] == "background" and not photo.mark and photo.mark_info is None
    registry = IndexRegistry(directory=Path(settings.IMGPROTECT_INDEX_DIR) / "marks")
    vectors = registry.get(org.pk).vectors
    assert vectors is not None and len(vectors) == 2 + MARK_VIEWS
    views = [mark_vector_id(logo.pk, slot) for slot in range(MARK_VIEWS)]
    assert all(v in vectors and vector_reference(v) == logo.pk for v in views)
    services.protected_image_delete(image=logo)
    vectors = registry.get(org.pk).vectors
    assert vectors is not None and len(vectors) == 1 and photo.pk in vectors
