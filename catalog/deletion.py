"""What deleting a protected image, a collection or an organisation must also remove.

A protected picture leaves copies of itself behind: the evidence PNGs of its match
reports (they draw it), the suspect files of checks that matched only it (often the
same bytes), thumbnails in the cache, its features file, bulk jobs' work directories,
and its entries in the index snapshots. ``Purge`` collects all of them inside the
deleting transaction and removes the files only after it commits, so a delete that
rolls back never loses a file. The rows go with the database's cascades (matches,
review events) or are deleted here (the checks tied only to deleted pictures).

Match reports and checks belong to ``matching``; they are reached through the reverse
relations of the catalogue's models and ``apps.get_model``, so the catalogue still
imports nothing from ``matching`` at load time.
"""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.dispatch import Signal

from catalog.files import rendition_cache_keys
from catalog.models import Collection, Organisation, ProtectedImage

log = logging.getLogger(__name__)

# Sent after commit for each organisation whose protected pictures were purged; receivers drop what
# they derived from them (the matching app's in-memory index entries and snapshots). Arguments:
# organisation_id, image_ids (the purged images' ids in that organisation), organisation_deleted.
index_purged = Signal()

# Sent inside the deleting transaction, before any file is removed, to ask the apps above the catalogue
# what else they derived from these organisations' pictures (the matching app: its index snapshot files),
# for the deletion receipt (catalog/receipts.py). Arguments: organisation_ids. Receivers answer a list of
# {"kind": ..., "name": ..., "size": ...} dicts.
derived_files_requested = Signal()


def stored_files_delete(names: list[str]) -> None:
    """Delete stored files (uploads, features, evidence) whose rows are gone; call it after commit."""
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except OSError as exc:  # the row is gone; a leftover file is logged, not fatal
            log.warning("could not delete stored file %s: %s", name, exc)


@dataclass
class Purge:
    files: set[str] = field(default_factory=set)
    work_dirs: set[Path] = field(default_factory=set)
    reindex: set[int] = field(default_factory=set)  # organisations whose index snapshots are rewritten
    # For the deletion receipt (catalog/receipts.py): what each stored file was, the rows deleted per
    # model label, and the index entries that go (image ids per organisation, entries per index).
    roles: dict[str, str] = field(default_factory=dict)
    rows: Counter[str] = field(default_factory=Counter)
    index_ids: dict[int, set[int]] = field(default_factory=dict)
    index_entries: Counter[str] = field(default_factory=Counter)
    organisation_deleted: bool = False

    def images(self, images: QuerySet[ProtectedImage]) -> None:
        """Collect what the images leave behind and delete the checks tied only to them. Call before deleting."""
        match = apps.get_model("matching", "Match")
        check = apps.get_model("matching", "Check")
        self._names(images.values_list("file"), "protected_image")
        self._names(images.values_list("features"), "features")
        self._names(images.values_list("mark"), "mark")
        self._names(match.objects.filter(protected_image__in=images).values_list("evidence"), "evidence")
        self._index_entries(images)
        # Checks whose every match report is to a deleted picture: their suspect file is a copy of it.
        touched = match.objects.filter(protected_image__in=images, source_check__isnull=False).values("source_check")
        kept = match.objects.filter(source_check__in=touched).exclude(protected_image__in=images)
        self.checks(check.objects.filter(pk__in=touched).exclude(pk__in=kept.values("source_check")))
        self.reindex.update(images.values_list("organisation_id", flat=True).distinct())
        self._near_duplicate_flags(images)

    def _near_duplicate_flags(self, images: QuerySet[ProtectedImage]) -> None:
        """Drop the other pictures' "near duplicate of" flags (matching/protection.py) that name a
        picture being deleted: they would point at nothing."""
        gone = set(images.values_list("pk", flat=True))
        # The flag list is JSON; its text holds the code in quotes wherever the flag is.
        flagged = (ProtectedImage.objects.filter(organisation_id__in=images.values("organisation_id"),
                                                 protection_flags__icontains="near_duplicate")
                   .exclude(pk__in=gone))
        for pk, flags in flagged.values_list("pk", "protection_flags").iterator():
            kept = [f for f in flags if not (f.get("code") == "near_duplicate" and f.get("image_id") in gone)]
            if len(kept) != len(flags):
                ProtectedImage.objects.filter(pk=pk).update(protection_flags=kept)

    def checks(self, checks: QuerySet) -> None:
        match = apps.get_model("matching", "Match")
        self._names(checks.values_list("file"), "check_upload")
        self._names(match.objects.filter(source_check__in=checks).values_list("evidence"), "evidence")
        self.deleted(checks.delete())

    def bulk_jobs(self, jobs: QuerySet) -> None:
        root = Path(settings.IMGPROTECT_BULK_WORK_DIR)
        self.work_dirs.update(root / f"job-{pk}" for pk in jobs.values_list("pk", flat=True))

    def deleted(self, result: tuple[int, dict[str, int]]) -> None:
        """Count what a ``QuerySet.delete()`` or ``Model.delete()`` removed (its return value), for the receipt."""
        self.rows.update({label: n for label, n in result[1].items() if n})

    def _names(self, rows: QuerySet, role: str) -> None:
        for row in rows:
            for name in row:
                if name:
                    self.files.add(name)
                    self.roles.setdefault(name, role)

    def _index_entries(self, images: QuerySet[ProtectedImage]) -> None:
        # The rows the matching processes index (matching/index_registry.py reads the same filter).
        indexed = images.filter(status=ProtectedImage.Status.INDEXED, phash__isnull=False)
        for pk, organisation_id, pdq in indexed.values_list("pk", "organisation_id", "pdq").iterator():
            self.index_ids.setdefault(organisation_id, set()).add(pk)
            self.index_entries["phash"] += 1
            self.index_entries["pdq"] += bool(pdq)
        self.index_entries["vectors"] += indexed.filter(embedding__isnull=False).count()

    def after_commit(self) -> None:
        transaction.on_commit(self.run)

    def run(self) -> None:
        stored_files_delete(sorted(self.files))
        cache.delete_many([key for name in self.files for key in rendition_cache_keys(name)])
        for path in self.work_dirs:
            shutil.rmtree(path, ignore_errors=True)
        for organisation_id in self.reindex:
            # The matching app drops the entries from its in-memory indexes and its index snapshots
            # (matching/apps.py): the catalogue does not know them.
            index_purged.send(sender=Organisation, organisation_id=organisation_id,
                              image_ids=sorted(self.index_ids.get(organisation_id, ())),
                              organisation_deleted=self.organisation_deleted)


def purge_images(images: QuerySet[ProtectedImage]) -> Purge:
    purge = Purge()
    purge.images(images)
    return purge


def purge_collection(collection: Collection) -> Purge:
    purge = purge_images(ProtectedImage.objects.filter(collection=collection))
    purge.bulk_jobs(collection.bulk_jobs.all())
    purge.reindex.add(collection.organisation_id)
    return purge


def purge_organisation(organisation: Organisation) -> Purge:
    purge = purge_images(ProtectedImage.objects.filter(organisation=organisation))
    purge.checks(organisation.checks.all())
    purge.bulk_jobs(organisation.bulk_jobs.all())
    purge.reindex.add(organisation.pk)
    purge.organisation_deleted = True
    return purge
