"""Vectors of another network computed again: after a new CNN head, stored vectors are not comparable.

Every stored CNN vector records the network that made it (``ProtectedImage.embedding_model``,
``matching.cnn.embedding_model``). The index registry leaves a picture whose vectors another network
made out of the CNN index (its digests and hashes still match), and ``python manage.py reembed``
computes them again from the stored file and mark, with the network this process embeds with, as
indexing would: the whole picture's vector and its mark views'. Hashes, local features and the mark
itself are not touched. A picture indexed while the CNN was off (no vector) is embedded too.
Kept suspects (``SuspectSignals``) whose vectors another network made are embedded again from the
check's upload while it is stored, as the check embedded them (the whole picture, and the
partial-copy pass's tiles when it ran); a scanned suspect, or one whose upload is gone, keeps being
judged on its digests and hashes by the retroactive re-check.
docs/training/embedder.md, "Stored vectors and the network that made them".
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.files.storage import default_storage
from django.db.models import QuerySet

from catalog.models import ProtectedImage
from catalog.services import index_generation_bump
from matching.cnn import embedding_model
from matching.core.errors import ImageError
from matching.core.loading import load_image
from matching.core import retro as core_retro
from matching.engine import get_embedder, stored_mark
from matching.models import SuspectSignals
from matching.protection import reference_embeddings
from matching.retro import suspect_pixels

log = logging.getLogger(__name__)

BATCH = 64  # pictures between two index-generation bumps: matching sees the new vectors as they come


@dataclass
class ReembedResult:
    model: str
    done: Counter[int] = field(default_factory=Counter)  # organisation id -> pictures re-embedded
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (image id, key, why)

    @property
    def total(self) -> int:
        return sum(self.done.values())


def stale_images(*, organisation_id: int | None = None, model: str | None = None) -> QuerySet[ProtectedImage]:
    """The indexed pictures whose vectors another network made (or none made), oldest first."""
    model = model if model is not None else embedding_model()
    if model is None:
        return ProtectedImage.objects.none()
    rows = ProtectedImage.objects.filter(status=ProtectedImage.Status.INDEXED).exclude(embedding_model=model)
    if organisation_id is not None:
        rows = rows.filter(organisation_id=organisation_id)
    return rows.order_by("pk")


def reembed(*, organisation_id: int | None = None, limit: int | None = None,
            progress: Callable[[ProtectedImage], None] | None = None) -> ReembedResult:
    """Compute the vectors of every stale picture (``stale_images``) again; at most ``limit``.

    Each row is written only if its vectors are still the stale ones (an upload indexed meanwhile
    is left as it is); the organisation's index generation moves after each batch, so the service's
    processes take the new vectors at their next check. A file that cannot be read or decoded is
    reported and skipped: the picture keeps matching on its digests and hashes.
    """
    model = embedding_model()
    if model is None:
        raise RuntimeError("The CNN is disabled (IMGPROTECT_CNN_ENABLED): there is no network to embed with.")
    embedder = get_embedder()
    assert embedder is not None and embedder.model_id == model, (embedder, model)
    result = ReembedResult(model=model)
    pending: set[int] = set()
    last = 0
    while limit is None or result.total + len(result.failed) < limit:
        take = BATCH if limit is None else min(BATCH, limit - result.total - len(result.failed))
        batch = list(stale_images(organisation_id=organisation_id, model=model).filter(pk__gt=last)[:take])
        if not batch:
            break
        for image in batch:
            last = image.pk
            if progress is not None:
                progress(image)
            try:
                with default_storage.open(image.file.name, "rb") as fh:
                    loaded = load_image(fh.read())
                vectors = reference_embeddings(loaded, embedder, stored_mark(image))
            except (ImageError, OSError, ValueError, KeyError) as exc:
                why = exc.reason if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
                log.warning("reembed: image %s (%s) skipped: %s", image.pk, image.key, why)
                result.failed.append((image.pk, image.key, why))
                continue
            changed = ProtectedImage.objects.filter(
                pk=image.pk, status=ProtectedImage.Status.INDEXED, embedding_model=image.embedding_model,
            ).update(embedding=vectors.embedding, mark_embeddings=vectors.mark_embeddings,
                     embedding_model=vectors.model)
            if changed:
                result.done[image.organisation_id] += 1
                pending.add(image.organisation_id)
        for organisation_id_done in sorted(pending):
            index_generation_bump(organisation_id=organisation_id_done)
        pending.clear()
    return result


@dataclass
class SuspectsResult:
    done: int = 0
    without_pixels: int = 0  # scanned, or the check's upload no longer stored: judged on hashes


def stale_suspects(*, organisation_id: int | None = None, model: str | None = None) -> QuerySet[SuspectSignals]:
    """Kept suspects with vectors that another network made, oldest first."""
    model = model if model is not None else embedding_model()
    if model is None:
        return SuspectSignals.objects.none()
    rows = (SuspectSignals.objects.exclude(embedding_model=model)
            .exclude(embedding__isnull=True, tile_embeddings__isnull=True))
    if organisation_id is not None:
        rows = rows.filter(organisation_id=organisation_id)
    return rows.order_by("pk")


def reembed_suspects(*, organisation_id: int | None = None) -> SuspectsResult:
    """Embed again the kept suspects of ``stale_suspects`` whose check's upload is still stored."""
    model = embedding_model()
    if model is None:
        raise RuntimeError("The CNN is disabled (IMGPROTECT_CNN_ENABLED): there is no network to embed with.")
    embedder = get_embedder()
    assert embedder is not None
    result = SuspectsResult()
    last = 0
    while True:
        batch = list(stale_suspects(organisation_id=organisation_id, model=model).filter(pk__gt=last)
                     .select_related("source_check")[:BATCH])
        if not batch:
            return result
        for suspect in batch:
            last = suspect.pk
            loaded = suspect_pixels(suspect.source_check)
            if loaded is None:
                result.without_pixels += 1
                continue
            whole = core_retro.embedding_bytes(embedder.embed_one(loaded.image))
            tiles = (core_retro.embedding_bytes(embedder.embed_crops(loaded.image, whole=False)[1])
                     if suspect.tile_embeddings else None)
            result.done += SuspectSignals.objects.filter(pk=suspect.pk, embedding_model=suspect.embedding_model).update(
                embedding=whole, tile_embeddings=tiles, embedding_model=model)
