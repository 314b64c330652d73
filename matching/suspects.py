"""The signals of suspects seen before (checked and scanned pictures), kept for retroactive
re-checks (matching/retro.py) for the organisation's ``suspect_retention_days``: digests, pHash and
PDQ with their eight flip/rotation variants, the CNN embeddings of the whole picture and of the
partial-copy tiles when that pass ran. Never the pixels: a checked picture's upload is the check's
own file, used while it is stored.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from catalog.models import Organisation
from matching.cnn import embedding_model
from matching.core import retro as core
from matching.core.loading import LoadedImage, heavy_work
from matching.core.matcher import MatchOutcome
from matching.core.signals import PDQ_MIN_QUALITY
from matching.engine import get_embedder
from matching.models import Check, SuspectSignals


def _hash_fields(signals: dict[str, Any]) -> dict[str, Any]:
    phashes = signals.get("phash_variants") or [signals["phash"]]
    quality = int(signals.get("pdq_quality") or 0)
    pdqs = (signals.get("pdq_variants") or [signals["pdq"]]) if signals.get("pdq") else []
    usable = quality >= PDQ_MIN_QUALITY and pdqs
    return {
        "sha256_bytes": signals.get("sha256_bytes", ""), "sha256_pixels": signals.get("sha256_pixels", ""),
        "phash_variants": core.hash_bytes(phashes, 1),
        "pdq_variants": core.hash_bytes(pdqs, core.PDQ_WORDS) if usable else b"",
        "pdq_quality": quality, "width": int(signals.get("width") or 0), "height": int(signals.get("height") or 0),
    }


def suspect_signals_keep(*, check: Check, outcome: MatchOutcome, loaded: LoadedImage | None = None
                         ) -> SuspectSignals | None:
    """Keep what a re-check needs of a checked picture (called after each pass of the check; the
    partial-copy pass adds its tiles). Nothing when the organisation keeps no suspect signals.

    A check that did not reach the CNN (it stopped at a hash match, or the organisation had no
    embedding indexed yet) computed no embedding: with ``loaded`` it is computed here, once, so
    that a later re-check can still find a modified copy of an image protected since.
    """
    if not check.organisation.suspect_retention_days or not outcome.signals.get("phash"):
        return None
    fields = _hash_fields(outcome.signals)
    whole, tiles = outcome.embeddings.get("whole"), outcome.embeddings.get("tiles")
    if whole is None and loaded is not None and not SuspectSignals.objects.filter(
            source_check=check, embedding__isnull=False).exists():
        embedder = get_embedder()
        if embedder is not None:
            with heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
                whole = embedder.embed_one(loaded.image)
    if whole is not None:
        fields["embedding"] = core.embedding_bytes(whole)
    if tiles is not None and len(tiles):
        fields["tile_embeddings"] = core.embedding_bytes(tiles)
    if "embedding" in fields or "tile_embeddings" in fields:  # made by this process's network
        fields["embedding_model"] = embedding_model() or ""
    row, _ = SuspectSignals.objects.update_or_create(
        source_check=check, defaults={**fields, "organisation_id": check.organisation_id,
                                      "collection_id": check.collection_id})
    return row


def suspect_signals_keep_scan(*, organisation_id: int, collection_id: int | None,
                              scanned: list[tuple[str, dict[str, Any]]]) -> int:
    """Keep the signals of scanned images (``(suspect key, the executor's signals)``); a key kept
    already is left as it is. Returns how many rows were new."""
    retention = Organisation.objects.filter(pk=organisation_id).values_list("suspect_retention_days", flat=True)
    if not scanned or not retention.first():
        return 0
    rows = []
    for key, signals in scanned:
        if not signals.get("phash"):
            continue
        vector = signals.get("embedding")
        rows.append(SuspectSignals(organisation_id=organisation_id, collection_id=collection_id, suspect_key=key,
                                   embedding=core.embedding_bytes(vector) if vector is not None else None,
                                   embedding_model=str(signals.get("embedding_model") or "") if vector is not None
                                   else "",
                                   **_hash_fields(signals)))
    before = SuspectSignals.objects.filter(organisation_id=organisation_id, source_check__isnull=True).count()
    SuspectSignals.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return SuspectSignals.objects.filter(organisation_id=organisation_id, source_check__isnull=True).count() - before


def suspect_signals_purge(*, organisation_id: int | None = None, now: datetime | None = None) -> int:
    """Delete the signals each organisation no longer keeps (older than its retention; all of them
    at 0 days). Returns how many rows went."""
    now = now or timezone.now()
    orgs = Organisation.objects.all() if organisation_id is None else Organisation.objects.filter(pk=organisation_id)
    deleted = 0
    for days in sorted(set(orgs.values_list("suspect_retention_days", flat=True))):
        rows = SuspectSignals.objects.filter(organisation__in=orgs.filter(suspect_retention_days=days))
        if days:
            rows = rows.filter(created__lt=now - timedelta(days=days))
        deleted += rows.delete()[0]
    return deleted
