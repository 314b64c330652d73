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
