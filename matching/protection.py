"""Protecting an image: store it, compute its signals with the matching engine, make it searchable.

The catalogue (``catalog.services``) owns the rows and their removal; adding and
indexing need the engine (decoding, hashes, the CNN embedding, local features),
so they live here, on the matching side.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.models import Collection, ProtectedImage
from catalog.files import extension_for
from catalog.deletion import stored_files_delete
from catalog.services import index_generation_bump
from imgprotect.dispatch import enqueue_on_commit
from imgprotect.errors import Conflict, ServiceError
from matching.core.errors import ImageError
from matching.core.geometry import extract_features, features_to_bytes
from matching.core.loading import LoadedImage, load_image
from matching.core.marks import extract_mark, mark_to_png, mark_views
from matching.core.signals import PDQ_MIN_QUALITY, compute_signals, from_hex64
from matching.encodings import embedding_to_bytes, to_signed64
from matching.engine import get_embedder


def protected_image_add(
    *,
    collection: Collection,
    key: str,
    data: bytes,
    loaded: LoadedImage,
    filename: str | None = None,
    index_now: bool = False,
) -> ProtectedImage:
    """Store a validated image and queue its indexing.

    ``loaded`` is the result of ``matching.core.loading.load_image(data)``: the
    caller validates before anything is written, so bad input stores nothing.
    With ``index_now`` the signals are computed in this call (bulk command line)
    instead of by a worker.
    """
    key = key.strip()
    if not key:
        raise ServiceError("The image key must not be empty.", code="invalid_key")
    if len(key) > 1024:
        raise ServiceError("The image key is longer than 1024 characters.", code="invalid_key")
    if ProtectedImage.objects.filter(collection=collection, key=key).exists():
        raise Conflict(f"The collection already holds an image with key {key!r}.", code="duplicate_key")
    duplicate = (
        ProtectedImage.objects.filter(collection=collection, sha256_pixels=loaded.sha256_pixels)
        .values_list("key", flat=True)
        .first()
    )
    if duplicate is not None:
        raise Conflict(f"The same picture is already protected in this collection as {duplicate!r}.",
                       code="duplicate_image")
    image = ProtectedImage(
        organisation_id=collection.organisation_id,
        collection=collection,
        key=key,
        size_bytes=len(data),
        sha256_bytes=loaded.sha256_bytes,
        sha256_pixels=loaded.sha256_pixels,
        width=loaded.width,
        height=loaded.height,
        format=loaded.format,
    )
    if index_now:
        apply_reference_signals(image, reference_signals(loaded))
    # Named from the decoded format: the uploader's ``filename`` never chooses how the file is served.
    name = f"upload.{extension_for(loaded.format)}"
    # The file is written before the row; if the row fails, the file is removed,
    # so a failed upload leaves nothing behind.
    image.file.save(name, ContentFile(data), save=False)
    try:
        with transaction.atomic():
            image.save()
            if index_now:
                index_generation_bump(organisation_id=collection.organisation_id)
            else:
                enqueue_on_commit("workers.tasks.index_protected_image", image.pk)
    except IntegrityError as exc:
        stored_files_delete([image.file.name, image.features.name, image.mark.name])
        raise Conflict(f"The collection already holds an image with key {key!r}.", code="duplicate_key") from exc
    except BaseException:
        stored_files_delete([image.file.name, image.features.name, image.mark.name])
        raise
    return image


@dataclass(frozen=True)
class ReferenceSignals:
    """Everything indexing computes for one protected image."""

    signals: dict
    embedding: bytes | None
    features: bytes | None
    # The mark alone (matching/core/marks.py), when the picture is one: RGBA PNG, where it lies and
    # what it was keyed from, and the embeddings of its views (concatenated float16 rows).
    mark_png: bytes | None = None
    mark_info: dict | None = None
    mark_embeddings: bytes | None = None


def reference_signals(loaded: LoadedImage) -> ReferenceSignals:
    """Hashes, the CNN embedding (when enabled), local features for verification, and the mark
    with its views' embeddings when the picture is a mark on a flat background or transparent."""
    embedder = get_embedder()
    embedding = embedding_to_bytes(embedder.embed_one(loaded.image)) if embedder is not None else None
    frame = (loaded.width, loaded.height)
    mark = extract_mark(loaded.image, loaded.alpha, frame=frame)
    mark_embeddings = None
    if mark is not None and embedder is not None:
        mark_embeddings = embedding_to_bytes(embedder.embed(mark_views(mark)))
    return ReferenceSignals(
        signals=compute_signals(loaded),
        embedding=embedding,
        features=features_to_bytes(extract_features(loaded.image, frame=frame)),
        mark_png=mark_to_png(mark) if mark is not None else None,
        mark_info={"box": list(mark.box), "source": mark.source,
                   "background": list(mark.background) if mark.background else None} if mark is not None else None,
        mark_embeddings=mark_embeddings,
    )


def apply_reference_signals(image: ProtectedImage, computed: ReferenceSignals) -> None:
    """Set the computed signals on an unsaved or about-to-be-updated row (stores the features file)."""
    signals = computed.signals
    image.signals = signals
    image.phash = to_signed64(from_hex64(signals["phash"]))
    image.pdq = signals.get("pdq", "") if signals.get("pdq_quality", 0) >= PDQ_MIN_QUALITY else ""
    image.pdq_quality = signals.get("pdq_quality", 0)
    image.embedding = computed.embedding
    if computed.features is not None:
        image.features.save("features.npz", ContentFile(computed.features), save=False)
    image.mark_info = computed.mark_info
    image.mark_embeddings = computed.mark_embeddings
    if computed.mark_png is not None:
        image.mark.save("mark.png", ContentFile(computed.mark_png), save=False)
    image.status = ProtectedImage.Status.INDEXED
    image.failure_reason = ""
    image.indexed_at = timezone.now()


def protected_image_index(*, image_id: int) -> ProtectedImage | None:
    """Compute an image's signals and make it searchable. Idempotent.

    Raises ``ImageError`` (permanent) after recording it on the row; storage
    errors propagate so the task can retry.
    """
    image = ProtectedImage.objects.filter(pk=image_id).select_related("collection").first()
    if image is None or image.status != ProtectedImage.Status.PENDING:
        return image  # deleted meanwhile, or already done by an earlier delivery
    with default_storage.open(image.file.name, "rb") as fh:
        data = fh.read()
    try:
        computed = reference_signals(load_image(data))
    except ImageError as exc:
        ProtectedImage.objects.filter(pk=image_id, status=ProtectedImage.Status.PENDING).update(
            status=ProtectedImage.Status.FAILED, failure_reason=exc.reason
        )
        raise
    apply_reference_signals(image, computed)
    with transaction.atomic():
        # Claim: only the delivery that moves pending -> indexed bumps the index.
        changed = ProtectedImage.objects.filter(pk=image_id, status=ProtectedImage.Status.PENDING).update(
            status=image.status, signals=image.signals, phash=image.phash, pdq=image.pdq,
            pdq_quality=image.pdq_quality, embedding=image.embedding, features=image.features.name,
            mark=image.mark.name, mark_info=image.mark_info, mark_embeddings=image.mark_embeddings,
            indexed_at=image.indexed_at, failure_reason="",
        )
        if changed:
            index_generation_bump(organisation_id=image.organisation_id)
        else:
            names = [image.features.name, image.mark.name]
            transaction.on_commit(lambda: stored_files_delete(names))  # an earlier delivery won
    image.refresh_from_db()
    return image
