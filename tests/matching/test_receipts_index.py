"""A deleted image can never match again: the deleting process drops its index entries at commit, before
any check reads the generation; a check queued before the deletion and run after does not report it
(matching/index_registry.py ``drop_ids``, catalog/deletion.py ``index_purged``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from catalog import services as catalog_services
from matching import protection
from matching import services
from matching.core.loading import load_image
from matching.index_registry import IndexRegistry, registry
from matching.models import Check
from tests.factories import CollectionFactory
from tests.images import photo_png, resized_jpeg

pytestmark = pytest.mark.django_db


def submit(org, data: bytes) -> Check:  # type: ignore[no-untyped-def]
    return services.check_submit(organisation=org, data=data, loaded=load_image(data), filename="suspect.jpg")


def run(capture, org, data: bytes) -> Check:  # type: ignore[no-untyped-def]
    """Submit a check and run what its commit queues (the check, its alerts)."""
    with capture(execute=True):
        check = submit(org, data)
    return check


def reported(check: Check) -> set[int]:
    check.refresh_from_db()
    assert check.status == "done", (check.status, check.failure_reason)
    return {c["image_id"] for c in check.result["candidates"]} | set(check.matches.values_list("protected_image",
                                                                                               flat=True))


def test_a_deleted_image_never_matches_again(org, settings, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    collection = CollectionFactory(organisation=org)
    doomed, kept = (protection.protected_image_add(collection=collection, key=name, data=photo_png(name),
                                                   loaded=load_image(photo_png(name)), index_now=True)
                    for name in ("coffee", "rocket"))
    doomed_id, copy = doomed.pk, resized_jpeg("coffee")
    capture = django_capture_on_commit_callbacks
    assert doomed.pk in reported(run(capture, org, copy))  # found while protected
    other_process = IndexRegistry(directory=Path(settings.IMGPROTECT_INDEX_DIR) / "other")
    assert other_process.holds(org.pk, doomed.pk) is False and doomed.pk in other_process.get(org.pk).phash
    assert registry.holds(org.pk, doomed.pk)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        early = submit(org, copy)  # queued before the deletion, run after it
    with django_capture_on_commit_callbacks(execute=True):
        receipt = catalog_services.protected_image_delete(image=doomed)
    # This process dropped the entries at commit, without a check or a reconciliation in between.
    assert not registry.holds(org.pk, doomed_id) and registry.holds(org.pk, kept.pk)
    assert receipt.body["index_entries"]["image_ids"] == [doomed_id]
    assert not (Path(settings.IMGPROTECT_INDEX_DIR) / f"org-{org.pk}").exists()  # its snapshot went too

    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:
            callback()
    assert doomed_id not in reported(early) and early.result["verdict"] == "none"
    assert doomed_id not in reported(run(capture, org, copy))  # right after
    assert kept.pk in reported(run(capture, org, photo_png("rocket")))  # the rest still matches
    # Another process drops them at its next check: it reads the generation the deletion bumped.
    assert doomed_id not in other_process.get(org.pk).phash and kept.pk in other_process.get(org.pk).phash
    # The next reconciliation rebuilds the tombstoned hash indexes: no entry of it in a new snapshot.
    registry.get(org.pk)
    import numpy as np

    for path in (Path(settings.IMGPROTECT_INDEX_DIR) / f"org-{org.pk}").rglob("*.npz"):
        with np.load(path) as arrays:
            assert all(doomed_id not in arrays[key] for key in arrays.files if "ids" in key), path.name
