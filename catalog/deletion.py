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
# they derived from them (the matching app's index snapshots). Arguments: organisation_id.
index_purged = Signal()


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

    def images(self, images: QuerySet[ProtectedImage]) -> None:
        """Collect what the images leave behind and delete the checks tied only to them. Call before deleting."""
        match = apps.get_model("matching", "Match")
        check = apps.get_model("matching", "Check")
        self._names(images.values_list("file", "features", "mark"))
        self._names(match.objects.filter(protected_image__in=images).values_list("evidence"))
        # Checks whose every match report is to a deleted picture: their suspect file is a copy of it.
        touched = match.objects.filter(protected_image__in=images, source_check__isnull=False).values("source_check")
        kept = match.objects.filter(source_check__in=touched).exclude(protected_image__in=images)
        self.checks(check.objects.filter(pk__in=touched).exclude(pk__in=kept.values("source_check")))
        self.reindex.update(images.values_list("organisation_id", flat=True).distinct())

    def checks(self, checks: QuerySet) -> None:
        match = apps.get_model("matching", "Match")
        self._names(checks.values_list("file"))
        self._names(match.objects.filter(source_check__in=checks).values_list("evidence"))
        checks.delete()

    def bulk_jobs(self, jobs: QuerySet) -> None:
        root = Path(settings.IMGPROTECT_BULK_WORK_DIR)
        self.work_dirs.update(root / f"job-{pk}" for pk in jobs.values_list("pk", flat=True))

    def _names(self, rows: QuerySet) -> None:
        self.files.update(name for row in rows for name in row if name)

    def after_commit(self) -> None:
        transaction.on_commit(self.run)

    def run(self) -> None:
        stored_files_delete(sorted(self.files))
        cache.delete_many([key for name in self.files for key in rendition_cache_keys(name)])
        for path in self.work_dirs:
            shutil.rmtree(path, ignore_errors=True)
        for organisation_id in self.reindex:
            # The matching app drops its index snapshots (matching/apps.py): the catalogue does not know them.
            index_purged.send(sender=Organisation, organisation_id=organisation_id)


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
    return purge
