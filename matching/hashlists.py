"""Hash exchange with Meta's Hasher-Matcher-Actioner (HMA) and ThreatExchange (docs/hash-exchange.md).

- export: a collection's PDQ hashes (optionally the eight flip/rotation variants) in the formats
  HMA and the ``threatexchange`` library read (``matching/core/hashlists.py``);
- import: a PDQ list as a hash-only bank (``HashList``) that checks and scans match against, with
  the verdict ``hash_list``;
- lookup: HMA's ``/m/lookup`` answer over one organisation's protected images and hash lists.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, Max

from catalog.models import Collection, Organisation, ProtectedImage
from catalog.validators import single_line
from imgprotect.errors import Conflict, NotFound, ServiceError
from matching.core.errors import ImageError
from matching.core.hamming import pdq_words
from matching.core.hashindex import HashIndex, make_hash_index
from matching.core.hashlists import ExportRow, HashListError, parse_hash_list
from matching.core.loading import heavy_work, load_image
from matching.core.signals import DIHEDRAL, PDQ_MIN_QUALITY, hex256, pdq_dihedral
from matching.engine import default_thresholds
from matching.index_registry import registry
from matching.models import HashList, HashListEntry, Verdict

log = logging.getLogger(__name__)

# An import is read whole and written in one transaction: bounded so one request cannot hold the
# database (or the worker's memory) for long. 200,000 hashes is 13 MB of plain text.
MAX_IMPORT_BYTES = 16 * 1024 * 1024
MAX_IMPORT_ENTRIES = 200_000


# --- import ----------------------------------------------------------------------------------

def hash_list_import(*, organisation: Organisation, name: str, data: bytes, description: str = "",
                     alert_emails: str = "", created_by: User | None = None) -> HashList:
    """A new hash list from a PDQ file (one hash a line, ``pdq <hash>`` lines, or CSV with a
    header). The file is checked whole first: any bad line refuses it and nothing is written."""
    name = (name or "").strip()
    if not name:
        raise ServiceError("Give the hash list a name.", code="invalid")
    if len(name) > 100:
        raise ServiceError("A hash list's name has at most 100 characters.", code="invalid")
    try:
        single_line(name)
        single_line(description)
        HashList._meta.get_field("alert_emails").run_validators(alert_emails)
    except ValidationError as exc:
        raise ServiceError(" ".join(exc.messages), code="invalid") from None
    if len(data) > MAX_IMPORT_BYTES:
        raise ServiceError(f"The file is over {MAX_IMPORT_BYTES // (1024 * 1024)} MB; split the list.",
                           code="hash_list_too_large")
    try:
        parsed = parse_hash_list(data, max_entries=MAX_IMPORT_ENTRIES)
    except HashListError as exc:
        raise ServiceError(f"The hash list cannot be read: {exc}.", code="invalid_hash_list") from None
    try:
        with transaction.atomic():
            hash_list = HashList.objects.create(
                organisation=organisation, name=name, description=description.strip()[:500],
                alert_emails=alert_emails.strip(),
                created_by=created_by if created_by is not None and created_by.is_authenticated else None)
            HashListEntry.objects.bulk_create(
                [HashListEntry(hash_list=hash_list, pdq=e.pdq, quality=e.quality, label=e.label) for e in parsed],
                batch_size=5000)
    except IntegrityError:
        raise Conflict(f"You already have a hash list named {name!r}.", code="duplicate_name") from None
    return hash_list


def hash_list_delete(*, hash_list: HashList) -> None:
    """Deletes the list, its entries and the match reports they made."""
    hash_list.delete()


def hash_list_get(*, organisation: Organisation, pk: int) -> HashList:
    found = HashList.objects.filter(organisation=organisation, pk=pk).first()
    if found is None:
        raise NotFound("No such hash list in your organisation.")
    return found


def hash_lists_of(organisation: Organisation):
    return HashList.objects.filter(organisation=organisation).annotate(entry_count=Count("entries")).order_by("name", "id")


# --- matching --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HashListHit:
    entry: HashListEntry
    distance: int
    variant: str  # DIHEDRAL's name of the query's variant that is this close ("original": as given)

    @property
    def score(self) -> float:
        return round(1 - self.distance / 256, 6)

    def as_json(self) -> dict[str, Any]:
        return {"hash_list_id": self.entry.hash_list_id, "hash_list": self.entry.hash_list.name,
                "entry_id": self.entry.pk, "label": self.entry.label, "pdq": self.entry.pdq,
                "distance": self.distance, "variant": self.variant, "score": self.score,
                "verdict": Verdict.HASH_LIST.value, "match": True}

    def signal_scores(self) -> dict[str, Any]:
        return {"pdq_distance": self.distance, "pdq_variant": self.variant}


class _HashListIndexes:
    """Each process's PDQ index over an organisation's hash-list entries, rebuilt when the entries
    changed: entries are only ever added (rising ids) or deleted with their list, so (count, last
    id, newest list) says whether the index is current (docs/coding-habits.md, habit 8)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[tuple[Any, ...], HashIndex]] = {}

    def get(self, organisation_id: int) -> HashIndex | None:
        stats = HashListEntry.objects.filter(hash_list__organisation_id=organisation_id).aggregate(
            n=Count("id"), last=Max("id"), newest=Max("hash_list__created"))
        checkpoint = (int(stats["n"] or 0), int(stats["last"] or 0), stats["newest"])
        if checkpoint[0] == 0:
            return None
        with self._lock:
            held = self._held.get(organisation_id)
            if held is not None and held[0] == checkpoint:
                return held[1]
        rows = list(HashListEntry.objects.filter(hash_list__organisation_id=organisation_id)
                    .values_list("id", "pdq"))
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        index = make_hash_index(4, codes=pdq_words([r[1] for r in rows]), ids=ids)
        with self._lock:  # an entry added while reading is caught by the next call's checkpoint
            self._held[organisation_id] = (checkpoint, index)
        return index

    def forget(self) -> None:
        with self._lock:
            self._held.clear()


hash_list_indexes = _HashListIndexes()


def hash_list_hits(*, organisation_id: int, signals: dict[str, Any]) -> list[HashListHit]:
    """The organisation's hash-list entries within the PDQ thresholds of a query's signals (its
    hash at ``pdq_near_duplicate``, its flip/rotation variants at ``pdq_variant_copy``, as the
    matcher searches protected images), closest first. A query too flat for PDQ matches nothing."""
    if not signals.get("pdq") or int(signals.get("pdq_quality") or 0) < PDQ_MIN_QUALITY:
        return []
    index = hash_list_indexes.get(organisation_id)
    if index is None:
        return []
    thresholds = default_thresholds()
    variants = signals.get("pdq_variants") or [signals["pdq"]]
    best: dict[int, tuple[int, str]] = {}
    for n, (code, (name, _)) in enumerate(zip(variants, DIHEDRAL)):
        radius = thresholds.pdq_near_duplicate if n == 0 else thresholds.pdq_variant_copy
        for entry_id, distance in index.query_radius(int(code, 16), radius):
            if entry_id not in best or distance < best[entry_id][0]:
                best[entry_id] = (int(distance), name)
    if not best:
        return []
    entries = HashListEntry.objects.filter(pk__in=list(best), hash_list__organisation_id=organisation_id) \
        .select_related("hash_list")
    hits = [HashListHit(e, *best[e.pk]) for e in entries]  # re-read: a list deleted a moment ago is gone
    return sorted(hits, key=lambda h: (h.distance, h.entry.pk))


# --- export ----------------------------------------------------------------------------------

def collection_hash_rows(*, collection: Collection, variants: bool = False) -> Iterator[ExportRow]:
    """One row per indexed image with a PDQ hash (an image too flat for PDQ has none); with
    ``variants``, eight per image: its hash and those of its seven flips and rotations, computed
    from the stored picture (PDQ variants need the pixels), labelled with DIHEDRAL's names."""
    images = ProtectedImage.objects.filter(collection=collection, status=ProtectedImage.Status.INDEXED) \
        .exclude(pdq="").order_by("id")
    for image in images.iterator(chunk_size=2000):
        if not variants:
            yield ExportRow(image.pdq, image.pdq_quality, image.pk, image.key, collection.slug, "original")
            continue
        try:
            hashes, quality = _variants_of(image)
        except (ImageError, OSError) as exc:
            log.warning("export: protected image %s unreadable, its hash alone is exported: %s", image.pk, exc)
            yield ExportRow(image.pdq, image.pdq_quality, image.pk, image.key, collection.slug, "original")
            continue
        for (name, _), code in zip(DIHEDRAL, hashes):
            yield ExportRow(hex256(code), quality, image.pk, image.key, collection.slug, name)


def _variants_of(image: ProtectedImage) -> tuple[list[int], int]:
    with default_storage.open(image.file.name, "rb") as fh, heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
        loaded = load_image(fh.read(), max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES,
                            max_pixels=settings.IMGPROTECT_MAX_PIXELS, max_side=settings.IMGPROTECT_WORK_MAX_SIDE,
                            max_decode_bytes=settings.IMGPROTECT_MAX_DECODE_BYTES)
        return pdq_dihedral(loaded.image)


# --- HMA lookup ------------------------------------------------------------------------------

def hma_lookup(*, organisation: Organisation, pdq: str) -> dict[str, list[dict[str, Any]]]:
    """HMA's ``GET /m/lookup`` answer for one PDQ hash: ``{bank: [{"bank_content_id": id,
    "distance": "d"}]}``, closest first. The banks are the organisation's collections (by slug; the
    content ids are protected image ids) and hash lists (by name; entry ids), searched at the
    near-duplicate PDQ threshold. ``distance`` is a string, as HMA's ``pretty_str`` gives it."""
    radius = default_thresholds().pdq_near_duplicate
    code = int(pdq, 16)
    found: dict[str, list[tuple[int, int]]] = {}
    index = registry.get(organisation.pk).pdq
    if index is not None and len(index):
        near = dict(index.query_radius(code, radius))
        images = ProtectedImage.objects.filter(pk__in=list(near), organisation=organisation,
                                               status=ProtectedImage.Status.INDEXED).select_related("collection")
        for image in images:
            found.setdefault(image.collection.slug, []).append((int(near[image.pk]), image.pk))
    lists = hash_list_indexes.get(organisation.pk)
    if lists is not None:
        near = dict(lists.query_radius(code, radius))
        for entry in HashListEntry.objects.filter(pk__in=list(near), hash_list__organisation=organisation) \
                .select_related("hash_list"):
            found.setdefault(entry.hash_list.name, []).append((int(near[entry.pk]), entry.pk))
    return {bank: [{"bank_content_id": pk, "distance": str(d)} for d, pk in sorted(hits)]
            for bank, hits in sorted(found.items())}
