"""Retroactive re-checks: images protected today are searched for in the suspects seen before.

Every check and every scanned image leaves its signals behind (``SuspectSignals``: digests, pHash
and PDQ with their flip/rotation variants, the CNN embeddings of the whole picture and of the
partial-copy tiles when that pass ran), for the organisation's ``suspect_retention_days``. When
images are indexed, ``suspects_recheck`` streams those signals against a small index of just the
new images (``matching/core/retro.py``) and judges each pair within the cascade's candidate radii
with the ``Matcher``, as a check does: with the suspect's pixels when its upload is still stored
(geometric verification, region, edit report, evidence picture), on its stored signals alone when
not (exact and near-duplicate digests and hashes, a flipped or turned copy by PDQ's variants; the
report says it was not verified). What it finds is written as ``Match`` rows marked
``found_retroactively`` and announced like any match.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog.deletion import stored_files_delete
from catalog.models import Collection, Organisation, ProtectedImage
from imgprotect.dispatch import enqueue_on_commit
from matching import services
from matching.cases import cases_attach
from matching.cnn import embedding_model
from matching.core import retro as core
from matching.core.errors import ImageError
from matching.core.hashindex import make_hash_index
from matching.core.marks import MARK_SLOTS, mark_vector_id
from matching.core.matcher import Indexes, Matcher
from matching.encodings import embedding_from_bytes, embeddings_from_bytes, to_unsigned64
from matching.engine import Candidate, DatabaseStore, default_thresholds, get_embedder
from matching.models import Check, Match, RecheckMark, SuspectSignals
from matching.review import review_auto_resolve

log = logging.getLogger(__name__)

BATCH = 2000  # suspects per numpy batch: a few MB of arrays, one query's worth of rows
NOT_VERIFIED = ("not verified: the suspect's file is no longer kept, so this was decided on its stored "
                "signals alone (digests and hashes)")
_COLUMNS = ("id", "sha256_bytes", "sha256_pixels", "phash_variants", "pdq_variants", "embedding",
            "tile_embeddings")


# --- the re-check ----------------------------------------------------------------------------

def _mark_views(image: ProtectedImage) -> list[tuple[int, np.ndarray]]:
    """The image's mark views as the service's index holds them (matching/index_registry.py)."""
    if not image.embedding or not image.mark_embeddings:
        return []
    views = embeddings_from_bytes(image.mark_embeddings, len(embedding_from_bytes(image.embedding)))
    return [(mark_vector_id(image.pk, slot), view) for slot, view in enumerate(views[:MARK_SLOTS])]


def _new_references(images: list[ProtectedImage], *, cnn: bool) -> core.NewReferences:
    return core.NewReferences.build([
        (image.pk, to_unsigned64(image.phash) if image.phash is not None else 0,
         int(image.pdq, 16) if image.pdq else None, image.sha256_bytes, image.sha256_pixels,
         embedding_from_bytes(image.embedding) if cnn and image.embedding else None)
        for image in images
    ], marks=[view for image in images for view in _mark_views(image)] if cnn else [])


def _indexes(refs: core.NewReferences) -> Indexes:
    """The cascade's indexes over the new images only, with their marks' views (as the service's
    index holds them), for the ``Matcher`` that judges a suspect."""
    out = Indexes(phash=make_hash_index(1, codes=refs.phash.reshape(-1, 1), ids=refs.ids),
                  pdq=make_hash_index(4, codes=refs.pdq[refs.has_pdq], ids=refs.ids[refs.has_pdq]))
    if refs.vectors is not None:
        from matching.core.vectorindex import VectorIndex

        has = np.abs(refs.vectors).sum(axis=1) > 0
        ids, vectors = refs.ids[has], refs.vectors[has]
        if refs.mark_ids is not None and refs.mark_vectors is not None:
            ids, vectors = np.concatenate([ids, refs.mark_ids]), np.concatenate([vectors, refs.mark_vectors])
        if len(ids):
            out.vectors = VectorIndex.build(ids, vectors)
    return out


def _kept_suspects(organisation: Organisation, *, seen_before: datetime) -> QuerySet[SuspectSignals]:
    """The organisation's suspects seen before ``seen_before`` and still within its retention."""
    rows = SuspectSignals.objects.filter(organisation=organisation, created__lte=seen_before)
    if organisation.suspect_retention_days:
        rows = rows.filter(created__gte=timezone.now() - timedelta(days=organisation.suspect_retention_days))
    return rows


def _suspect_batches(organisation: Organisation, *, seen_before: datetime, dim: int | None
                     ) -> Iterator[tuple[core.SuspectBatch, dict[int, int | None]]]:
    """The organisation's kept suspects seen before ``seen_before``, in id order, a batch at a time,
    with each suspect's collection scope."""
    rows = _kept_suspects(organisation, seen_before=seen_before)
    columns = _COLUMNS if dim else _COLUMNS[:5]
    # A suspect's vectors are compared only when this process's network made them (a new head's are
    # not comparable): the others are judged on their digests and hashes.
    model = embedding_model() if dim else None
    last = 0
    while True:
        chunk = list(rows.filter(pk__gt=last).order_by("pk")
                     .values_list(*columns, "embedding_model", "collection_id")[:BATCH])
        if not chunk:
            return
        last = chunk[-1][0]
        decoded = [tuple(r[:len(columns)]) + (None,) * (len(_COLUMNS) - len(columns)) if r[-2] == model
                   else tuple(r[:5]) + (None,) * (len(_COLUMNS) - 5) for r in chunk]
        yield core.SuspectBatch.from_rows(decoded, dim), {r[0]: r[-1] for r in chunk}


def suspects_recheck(*, image_ids: list[int]) -> list[int]:
    """Search the suspects seen before for copies of newly indexed images and write what is found
    as matches marked ``found_retroactively``, with alerts. Returns the ids of the new matches.

    One pass over the suspects serves every image of the organisation indexed since the last
    re-check (``RecheckMark``), these included: the task is queued with a delay after each image
    (``IMGPROTECT_RECHECK_DELAY_SECONDS``), so the first to run takes the whole upload and the
    others find their images done. Idempotent: a pair reported already is not reported again.
    """
    orgs = set(ProtectedImage.objects.filter(pk__in=image_ids).values_list("organisation_id", flat=True))
    created: list[int] = []
    for organisation_id in sorted(orgs):
        created += _recheck_claimed(organisation_id, image_ids)
    return created


def recheck_queue_since(*, collection: Collection, since: datetime) -> None:
    """Queue the retroactive re-check for what a load into ``collection`` indexed from ``since`` on
    (a bulk load, ``index_images`` in-process), as an upload does for its image: one task named by
    the earliest new image; its pass takes every image of the organisation indexed since the last
    re-check, the rest of this load included, and queues the next pass when one is not enough."""
    first = (ProtectedImage.objects.filter(collection=collection, status=ProtectedImage.Status.INDEXED,
                                           indexed_at__gte=since)
             .order_by("indexed_at", "pk").values_list("pk", flat=True).first())
    if first is not None:
        enqueue_on_commit("workers.tasks.recheck_suspects", [first],
                          countdown=settings.IMGPROTECT_RECHECK_DELAY_SECONDS)


MAX_IMAGES_PER_PASS = 1000  # the cosine matrix of a batch stays a few MB; the rest get their own pass


def _recheck_claimed(organisation_id: int, image_ids: list[int]) -> list[int]:
    indexed = ProtectedImage.objects.filter(organisation_id=organisation_id, status=ProtectedImage.Status.INDEXED,
                                            indexed_at__isnull=False)
    with transaction.atomic():
        first = indexed.filter(pk__in=image_ids).order_by("indexed_at").values_list("indexed_at", flat=True).first()
        if first is None:
            return []  # deleted, or failed, meanwhile
        # A first mark starts a little before these images, so the other images of the same upload,
        # whose own tasks are still waiting, are taken too (twice at worst: reports are idempotent).
        mark, _ = RecheckMark.objects.select_for_update().get_or_create(
            organisation_id=organisation_id, defaults={"until": first - timedelta(minutes=10)})
        pending = list(indexed.filter(indexed_at__gt=mark.until).order_by("indexed_at", "pk")
                       .select_related("organisation", "collection")[:MAX_IMAGES_PER_PASS + 1])
        if not pending:
            return []  # a re-check that ran before this one took these images
        more = len(pending) > MAX_IMAGES_PER_PASS
        if more:
            # More than one pass: this one stops before the last instant it reaches (an instant is
            # never split between passes) and queues the next, so a bulk load's one task covers the
            # whole load (matching/bulk/load.py) and no image waits for a task of its own.
            last = pending[MAX_IMAGES_PER_PASS].indexed_at
            pending = [image for image in pending[:MAX_IMAGES_PER_PASS] if image.indexed_at != last] or list(
                indexed.filter(indexed_at=last).order_by("pk").select_related("organisation", "collection"))
        before, mark.until = mark.until, max(image.indexed_at for image in pending if image.indexed_at)
        mark.save(update_fields=["until"])
        if more:
            following = (indexed.filter(indexed_at__gt=mark.until).order_by("indexed_at", "pk")
                         .values_list("pk", flat=True).first())
            if following is not None:
                enqueue_on_commit("workers.tasks.recheck_suspects", [following])
    try:
        return _recheck_organisation(pending[0].organisation, pending)
    except BaseException:  # give the images back, so the retry searches for them
        RecheckMark.objects.filter(pk=mark.pk, until=mark.until).update(until=before)
        raise


def _recheck_organisation(organisation: Organisation, images: list[ProtectedImage]) -> list[int]:
    if not organisation.suspect_retention_days:
        return []
    seen_before = max(image.indexed_at or timezone.now() for image in images)
    if not _kept_suspects(organisation, seen_before=seen_before).exists():
        return []  # nothing to search: skip loading the model and decoding the new images' vectors
    started = time.perf_counter()
    embedder = get_embedder()
    refs = _new_references(images, cnn=embedder is not None)
    dim = refs.vectors.shape[1] if refs.vectors is not None else None
    thresholds = default_thresholds()
    collection_of = {image.pk: image.collection_id for image in images}
    pairs: dict[int, set[int]] = defaultdict(set)
    by_hash: set[int] = set()  # suspects a digest or a hash points at (the others need their pixels)
    scanned = 0
    for batch, scopes in _suspect_batches(organisation, seen_before=seen_before, dim=dim):
        scanned += len(batch)
        for c in core.search(refs, batch, thresholds):
            scope = scopes[c.suspect_id]
            if scope is None or scope == collection_of[c.reference_id]:
                pairs[c.suspect_id].add(c.reference_id)
                if c.by_hash:
                    by_hash.add(c.suspect_id)
    searched = time.perf_counter()
    indexes = _indexes(refs) if pairs else Indexes()
    created: list[int] = []
    for suspect in SuspectSignals.objects.filter(pk__in=list(pairs)).select_related("source_check").order_by("pk"):
        created += _judge(organisation, suspect, pairs[suspect.pk], indexes, embedder,
                          hashes=suspect.pk in by_hash)
    log.info("re-check of %s new images in %s: %s suspects searched in %.0f ms, %s to judge, %s matches, "
             "total %.0f ms", len(images), organisation.slug, scanned, (searched - started) * 1000, len(pairs),
             len(created), (time.perf_counter() - started) * 1000)
    return created


def suspect_pixels(check: Check | None) -> Any | None:
    """The suspect's picture, when its upload is still stored (else None: judged on signals)."""
    if check is None or not check.file or not default_storage.exists(check.file.name):
        return None
    try:
        return services.check_image_load(check)
    except (ImageError, OSError) as exc:
        log.warning("check %s: stored upload unusable for a re-check: %s", check.pk, exc)
        return None


def _signals_of(suspect: SuspectSignals) -> dict[str, Any]:
    return {**core.stored_signals(sha256_bytes=suspect.sha256_bytes, sha256_pixels=suspect.sha256_pixels,
                                  phash_variants=suspect.phash_variants, pdq_variants=suspect.pdq_variants,
                                  pdq_quality=suspect.pdq_quality),
            "width": suspect.width, "height": suspect.height}


def _judge(organisation: Organisation, suspect: SuspectSignals, ref_ids: set[int], indexes: Indexes,
           embedder: Any | None, *, hashes: bool) -> list[int]:
    """Judge one suspect against the new images it may copy, as a check would, and write the matches.
    ``hashes``: a digest or hash points at one of them (else only the CNN does, which without the
    suspect's pixels can decide nothing)."""
    check = suspect.source_check
    loaded = suspect_pixels(check)
    if loaded is None and not hashes:
        return []
    store = DatabaseStore(organisation.pk, suspect.collection_id)
    # The indexes hold the new images only: an unsure mark's crop would be "nearest" to one of them
    # for want of the rest, so a re-check keeps only sure marks (docs/matching.md, "Marks").
    matcher = Matcher(store=store, indexes=indexes, thresholds=default_thresholds(), embedder=embedder,
                      unsure_marks=False)
    allowed = ref_ids.__contains__
    if loaded is not None:
        outcome = matcher.match(loaded, partial="auto", allowed=allowed)
    else:
        outcome = matcher.match(None, signals=_signals_of(suspect), allowed=allowed)
    found = [Candidate(d, store.rows[d.reference_id]) for d in outcome.positives if d.reference_id in store.rows]
    if not found:
        return []
    evidence = {c.image.pk: services.match_evidence_render(loaded, c, outcome) for c in found} if loaded else {}
    written: list[str] = []
    try:
        with transaction.atomic():
            alive = set(ProtectedImage.objects.select_for_update().filter(pk__in=[c.image.pk for c in found])
                        .values_list("pk", flat=True))
            new = [m for c in found if c.image.pk in alive
                   and (m := _write_match(organisation, suspect, check, c, loaded is not None, evidence, written))]
            review_auto_resolve(matches=new)
            cases_attach(matches=new)  # a re-checked check joins the case of the site it was found on
            if new:
                enqueue_on_commit("workers.tasks.send_retro_alerts", [m.pk for m in new])
    except BaseException:
        stored_files_delete(written)
        raise
    return [m.pk for m in new]


def _write_match(organisation: Organisation, suspect: SuspectSignals, check: Check | None, found: Candidate,
                 verified: bool, evidence: dict[int, bytes | None], written: list[str]) -> Match | None:
    """The match report of one pair, unless the pair was reported already (then None)."""
    d = found.decision
    scores = dict(d.signal_scores)
    if not verified:
        scores["verification"] = NOT_VERIFIED
    values = {"organisation_id": organisation.pk, "score": d.score, "verdict": d.verdict, "signal_scores": scores,
              "region": d.region, "edit_report": d.edit, "found_retroactively": True}
    if check is not None:
        match, created = Match.objects.get_or_create(source_check=check, protected_image=found.image, defaults=values)
    else:
        reported = Match.objects.filter(organisation=organisation, source_check__isnull=True,
                                        suspect_key=suspect.suspect_key, protected_image=found.image)
        created = not reported.exists()
        if not created:
            return None
        match = Match.objects.create(suspect_key=suspect.suspect_key, protected_image=found.image, **values)
    if not created:
        return None
    if png := evidence.get(found.image.pk):
        match.evidence.save("evidence.png", ContentFile(png), save=True)
        written.append(match.evidence.name)
    return match
