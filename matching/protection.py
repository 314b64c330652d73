"""Protecting an image: store it, compute its signals with the matching engine, make it searchable.

The catalogue (``catalog.services``) owns the rows and their removal; adding and
indexing need the engine (decoding, hashes, the CNN embedding, local features),
so they live here, on the matching side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
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
from matching.core.protectability import Flag, pixel_flags
from matching.core.marks import MARK_VIEWS, Mark, extract_mark, mark_info, mark_to_png, mark_views, vector_reference
from matching.core.signals import PDQ_MIN_QUALITY, compute_signals, from_hex64
from matching.encodings import embedding_from_bytes, embedding_to_bytes, to_signed64
from matching.cnn import embedding_model
from matching.engine import default_thresholds, get_embedder
from matching.index_registry import registry


def protected_image_add(
    *,
    collection: Collection,
    key: str,
    data: bytes,
    loaded: LoadedImage,
    filename: str | None = None,
    index_now: bool = False,
    recheck: bool = True,
) -> ProtectedImage:
    """Store a validated image and queue its indexing.

    ``loaded`` is the result of ``matching.core.loading.load_image(data)``: the
    caller validates before anything is written, so bad input stores nothing.
    With ``index_now`` the signals are computed in this call (bulk command line)
    instead of by a worker; without ``recheck`` the retroactive re-check is left to
    the caller, which queues one for the whole load (``retro.recheck_queue_since``).
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
    # What the pixels alone tell, so the upload's answer shows it; indexing completes the flags.
    image.protection_flags = [f.as_json() for f in pixel_flags(loaded.image, width=loaded.width,
                                                                height=loaded.height)]
    if index_now:
        computed = reference_signals(loaded)
        apply_reference_signals(image, computed)
        image.protection_flags = [f.as_json() for f in protection_flags(loaded, computed)]
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
                if recheck:
                    enqueue_on_commit("workers.tasks.recheck_suspects", [image.pk],  # suspects seen before
                                      countdown=settings.IMGPROTECT_RECHECK_DELAY_SECONDS)
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
    keypoints: int | None = None  # how many local features ``features`` holds
    # The mark alone (matching/core/marks.py), when the picture is one: RGBA PNG, where it lies and
    # what it was keyed from, and the embeddings of its views (concatenated float16 rows).
    mark_png: bytes | None = None
    mark_info: dict | None = None
    mark_embeddings: bytes | None = None
    # The network that made the embeddings (``embedder.model_id``); "" without them.
    embedding_model: str = ""


@dataclass(frozen=True)
class ReferenceEmbeddings:
    """A protected picture's CNN vectors: the whole picture's, its mark views' (when it is a mark),
    and the network that made them."""

    embedding: bytes
    mark_embeddings: bytes | None
    model: str


def reference_embeddings(loaded: LoadedImage, embedder: Any, mark: Mark | None) -> ReferenceEmbeddings:
    """The vectors indexing stores for ``loaded`` (whose mark, if any, is ``mark``)."""
    return ReferenceEmbeddings(
        embedding=embedding_to_bytes(embedder.embed_one(loaded.image)),
        mark_embeddings=embedding_to_bytes(embedder.embed(mark_views(mark))) if mark is not None else None,
        model=embedder.model_id,
    )


def reference_signals(loaded: LoadedImage) -> ReferenceSignals:
    """Hashes, the CNN embedding (when enabled), local features for verification, and the mark
    with its views' embeddings when the picture is a mark on a flat background or transparent."""
    embedder = get_embedder()
    frame = (loaded.width, loaded.height)
    features = extract_features(loaded.image, frame=frame)
    mark = extract_mark(loaded.image, loaded.alpha, frame=frame)
    vectors = reference_embeddings(loaded, embedder, mark) if embedder is not None else None
    return ReferenceSignals(
        signals=compute_signals(loaded),
        embedding=vectors.embedding if vectors else None,
        features=features_to_bytes(features),
        keypoints=len(features),
        mark_png=mark_to_png(mark) if mark is not None else None,
        mark_info=mark_info(mark) if mark is not None else None,
        mark_embeddings=vectors.mark_embeddings if vectors else None,
        embedding_model=vectors.model if vectors else "",
    )


def protection_flags(loaded: LoadedImage, computed: ReferenceSignals, *, organisation_id: int | None = None,
                     image_id: int | None = None) -> list[Flag]:
    """Why copies of this picture may go unfound (docs/self-test.md): tiny, flat, few features and, given
    its organisation, a near-duplicate of another protected image there."""
    flags = pixel_flags(loaded.image, width=loaded.width, height=loaded.height,
                        pdq_quality=computed.signals.get("pdq_quality", 0), keypoints=computed.keypoints)
    if organisation_id is not None:
        flags += near_duplicate_flags(organisation_id=organisation_id, image_id=image_id, computed=computed)
    return flags


def near_duplicate_flags(*, organisation_id: int, image_id: int | None, computed: ReferenceSignals) -> list[Flag]:
    """The organisation's indexed images this one is a near-duplicate of, by the thresholds a check uses:
    pHash or PDQ within the near-duplicate distance, or the CNN embeddings at least ``cnn_similar`` alike.
    A check for a copy of either would report both, so the pair's matches cannot be told apart."""
    t = default_thresholds()
    indexes = registry.get(organisation_id)
    signals = computed.signals
    found: dict[int, str] = {}
    if indexes.phash is not None and len(indexes.phash):
        for ref_id, distance in indexes.phash.query_radius(from_hex64(signals["phash"]), t.phash_near_duplicate):
            found.setdefault(int(ref_id), f"pHash distance {distance} (at most {t.phash_near_duplicate})")
    if (indexes.pdq is not None and len(indexes.pdq) and signals.get("pdq")
            and signals.get("pdq_quality", 0) >= PDQ_MIN_QUALITY):
        for ref_id, distance in indexes.pdq.query_radius(int(signals["pdq"], 16), t.pdq_near_duplicate):
            found.setdefault(int(ref_id), f"PDQ distance {distance} (at most {t.pdq_near_duplicate})")
    if indexes.vectors is not None and len(indexes.vectors) and computed.embedding:
        # The index also holds logos' mark views (marks.mark_vector_id): searched as deep as a check
        # searches, and each hit counted for the picture it belongs to.
        for vector_id, score in indexes.vectors.search(embedding_from_bytes(computed.embedding),
                                                       5 * (1 + MARK_VIEWS))[0]:
            if score >= t.cnn_similar:
                found.setdefault(vector_reference(int(vector_id)),
                                 f"CNN similarity {score:.2f} (at least {t.cnn_similar:g})")
    found.pop(image_id or 0, None)
    if not found:
        return []
    # The indexes may still hold an image deleted a moment ago: only rows that exist count.
    others = ProtectedImage.objects.filter(organisation_id=organisation_id, pk__in=list(found),
                                           status=ProtectedImage.Status.INDEXED).order_by("pk")
    return [Flag("near_duplicate", f"Near-duplicate of \u201c{other.key}\u201d (image {other.pk}): {found[other.pk]}; "
                                   "a copy of either would be reported as both.", image_id=other.pk)
            for other in others.only("pk", "key")]


def apply_reference_signals(image: ProtectedImage, computed: ReferenceSignals) -> None:
    """Set the computed signals on an unsaved or about-to-be-updated row (stores the features file)."""
    signals = computed.signals
    image.signals = signals
    image.phash = to_signed64(from_hex64(signals["phash"]))
    image.pdq = signals.get("pdq", "") if signals.get("pdq_quality", 0) >= PDQ_MIN_QUALITY else ""
    image.pdq_quality = signals.get("pdq_quality", 0)
    image.embedding = computed.embedding
    image.embedding_model = computed.embedding_model if computed.embedding else ""
    if computed.keypoints is not None:
        image.keypoint_count = computed.keypoints
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
        loaded = load_image(data)
        computed = reference_signals(loaded)
    except ImageError as exc:
        ProtectedImage.objects.filter(pk=image_id, status=ProtectedImage.Status.PENDING).update(
            status=ProtectedImage.Status.FAILED, failure_reason=exc.reason
        )
        raise
    apply_reference_signals(image, computed)
    image.protection_flags = [f.as_json() for f in protection_flags(
        loaded, computed, organisation_id=image.organisation_id, image_id=image.pk)]
    with transaction.atomic():
        # Claim: only the delivery that moves pending -> indexed bumps the index.
        changed = ProtectedImage.objects.filter(pk=image_id, status=ProtectedImage.Status.PENDING).update(
            status=image.status, signals=image.signals, phash=image.phash, pdq=image.pdq,
            pdq_quality=image.pdq_quality, embedding=image.embedding, embedding_model=image.embedding_model,
            features=image.features.name,
            mark=image.mark.name, mark_info=image.mark_info, mark_embeddings=image.mark_embeddings,
            indexed_at=image.indexed_at, failure_reason="", protection_flags=image.protection_flags,
            keypoint_count=image.keypoint_count,
        )
        if changed:
            index_generation_bump(organisation_id=image.organisation_id)
            enqueue_on_commit("workers.tasks.recheck_suspects", [image_id],  # suspects seen before
                              countdown=settings.IMGPROTECT_RECHECK_DELAY_SECONDS)
        else:
            names = [image.features.name, image.mark.name]
            transaction.on_commit(lambda: stored_files_delete(names))  # an earlier delivery won
    image.refresh_from_db()
    return image


def cnn_searched(image: ProtectedImage, model: str | None = None) -> bool | None:
    """Whether a check's CNN stage searches for ``image``: it is indexed, with vectors of the network
    this process embeds with (``model``: ``matching.cnn.embedding_model()`` when not given). False: only
    digests, hashes and local features find its copies until ``manage.py reembed`` runs (a new CNN head
    since it was indexed, or the CNN was off; docs/training/embedder.md). None: the CNN is off."""
    model = model if model is not None else embedding_model()
    if model is None:
        return None
    return image.status == ProtectedImage.Status.INDEXED and bool(image.embedding) and image.embedding_model == model
