"""Writes for the catalogue (STYLE.md habit 1): typed, keyword-only, atomic."""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from catalog.models import ApiKey, Collection, Membership, Organisation, ProtectedImage, Role, hash_api_secret
from catalog.validators import single_line
from matching.core.errors import ImageError
from matching.core.loading import LoadedImage
from matching.core.signals import PDQ_MIN_QUALITY, compute_signals, from_hex64

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; ``code`` is stable for API clients."""

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Conflict(ServiceError):
    code = "conflict"
    status = 409


def names_validate(**names: str) -> None:
    """Refuse names with a line break or control character (catalog/validators.py): a
    ``ValidationError`` per field, which the API answers with 400."""
    errors = {}
    for field, value in names.items():
        try:
            single_line(value)
        except ValidationError as exc:
            errors[field] = exc.messages
    if errors:
        raise ValidationError(errors)


# --- organisations and members ---------------------------------------------

@transaction.atomic
def organisation_create(*, slug: str, name: str | None = None, owner: AbstractBaseUser | None = None) -> Organisation:
    names_validate(name=name or slug)
    org = Organisation.objects.create(slug=slugify(slug) or "org", name=name or slug)
    if owner is not None:
        Membership.objects.create(user=owner, organisation=org, role=Role.OWNER)
    return org


def organisation_get_or_create(*, slug: str) -> Organisation:
    org = Organisation.objects.filter(slug=slugify(slug)).first()
    return org or organisation_create(slug=slug, name=slug)


@transaction.atomic
def membership_set(*, organisation: Organisation, user: AbstractBaseUser, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        organisation=organisation, user=user, defaults={"role": Role(role)}
    )
    return membership


# --- API keys ----------------------------------------------------------------

@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once; only its hash is stored


@transaction.atomic
def api_key_create(
    *, organisation: Organisation, name: str, role: str = Role.MEMBER, created_by: AbstractBaseUser | None = None
) -> IssuedKey:
    names_validate(name=name)
    prefix = secrets.token_hex(4)
    secret = f"ipk_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        organisation=organisation,
        name=name,
        role=Role(role),
        prefix=prefix,
        hashed_secret=hash_api_secret(secret),
        created_by=created_by,
    )
    return IssuedKey(key=key, secret=secret)


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked__isnull=True).update(revoked=timezone.now())
    key.refresh_from_db()
    return key


# --- collections ---------------------------------------------------------------

def _unique_collection_slug(organisation: Organisation, base: str, exclude_id: int | None = None) -> str:
    base = slugify(base)[:90] or "collection"
    slug, n = base, 1
    existing = Collection.objects.filter(organisation=organisation)
    if exclude_id:
        existing = existing.exclude(pk=exclude_id)
    while existing.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def collection_create(
    *,
    organisation: Organisation,
    name: str,
    slug: str | None = None,
    description: str = "",
    alert_emails: str = "",
    phash_max_distance: int | None = None,
) -> Collection:
    names_validate(name=name)
    if slug and Collection.objects.filter(organisation=organisation, slug=slugify(slug)).exists():
        raise Conflict(f"A collection with slug {slugify(slug)!r} already exists.")
    collection = Collection(
        organisation=organisation,
        name=name,
        slug=slugify(slug) if slug else _unique_collection_slug(organisation, name),
        description=description,
        alert_emails=alert_emails,
        phash_max_distance=phash_max_distance,
    )
    collection.full_clean()
    collection.save()
    return collection


def collection_get_or_create(*, organisation: Organisation, name: str) -> Collection:
    """Find a collection by slug or name (the command line's NAME), else create it."""
    found = (
        Collection.objects.filter(organisation=organisation, slug=slugify(name)).first()
        or Collection.objects.filter(organisation=organisation, name=name).first()
    )
    return found or collection_create(organisation=organisation, name=name)


@transaction.atomic
def collection_update(*, collection: Collection, **fields: object) -> Collection:
    allowed = {"name", "description", "alert_emails", "alert_frequency", "phash_max_distance", "slug"}
    unknown = set(fields) - allowed
    if unknown:
        raise ServiceError(f"Cannot update {', '.join(sorted(unknown))}.")
    if "name" in fields:
        names_validate(name=str(fields["name"]))
    for name, value in fields.items():
        setattr(collection, name, slugify(str(value)) if name == "slug" else value)
    if "slug" in fields and Collection.objects.filter(
        organisation=collection.organisation, slug=collection.slug
    ).exclude(pk=collection.pk).exists():
        raise Conflict(f"A collection with slug {collection.slug!r} already exists.")
    collection.full_clean()
    collection.save()
    return collection


@transaction.atomic
def collection_delete(*, collection: Collection) -> None:
    files = [name for pair in ProtectedImage.objects.filter(collection=collection).values_list("file", "features")
             for name in pair]
    organisation_id = collection.organisation_id
    collection.delete()
    _bump_generation(organisation_id)
    transaction.on_commit(lambda: _delete_files(files))


# --- protected images -----------------------------------------------------------

def _bump_generation(organisation_id: int) -> None:
    Organisation.objects.filter(pk=organisation_id).update(index_generation=F("index_generation") + 1)


def _delete_files(names: list[str]) -> None:
    from django.core.files.storage import default_storage

    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except OSError as exc:  # the row is gone; a leftover file is logged, not fatal
            log.warning("could not delete stored file %s: %s", name, exc)


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
        _apply_signals(image, reference_signals(loaded))
    name = filename or f"upload.{loaded.format.lower()}"
    # The file is written before the row; if the row fails, the file is removed,
    # so a failed upload leaves nothing behind.
    image.file.save(name, ContentFile(data), save=False)
    try:
        with transaction.atomic():
            image.save()
            if index_now:
                _bump_generation(collection.organisation_id)
            else:
                from workers.tasks import index_protected_image

                image_id = image.pk
                transaction.on_commit(lambda: index_protected_image.delay(image_id))
    except IntegrityError as exc:
        _delete_files([image.file.name, image.features.name])
        raise Conflict(f"The collection already holds an image with key {key!r}.", code="duplicate_key") from exc
    except BaseException:
        _delete_files([image.file.name, image.features.name])
        raise
    return image


@dataclass(frozen=True)
class ReferenceSignals:
    """Everything indexing computes for one protected image."""

    signals: dict
    embedding: bytes | None
    features: bytes | None


def reference_signals(loaded: LoadedImage) -> ReferenceSignals:
    """Hashes, the CNN embedding (when enabled) and local features for verification."""
    from matching.core.geometry import extract_features, features_to_bytes
    from matching.engine import get_embedder
    from matching.index_registry import embedding_to_bytes

    embedder = get_embedder()
    embedding = embedding_to_bytes(embedder.embed_one(loaded.image)) if embedder is not None else None
    return ReferenceSignals(
        signals=compute_signals(loaded),
        embedding=embedding,
        features=features_to_bytes(extract_features(loaded.image, frame=(loaded.width, loaded.height))),
    )


def _apply_signals(image: ProtectedImage, computed: ReferenceSignals) -> None:
    """Set the computed signals on an unsaved or about-to-be-updated row (stores the features file)."""
    from matching.index_registry import to_signed64

    signals = computed.signals
    image.signals = signals
    image.phash = to_signed64(from_hex64(signals["phash"]))
    image.pdq = signals.get("pdq", "") if signals.get("pdq_quality", 0) >= PDQ_MIN_QUALITY else ""
    image.pdq_quality = signals.get("pdq_quality", 0)
    image.embedding = computed.embedding
    if computed.features is not None:
        image.features.save("features.npz", ContentFile(computed.features), save=False)
    image.status = ProtectedImage.Status.INDEXED
    image.failure_reason = ""
    image.indexed_at = timezone.now()


def protected_image_index(*, image_id: int) -> ProtectedImage | None:
    """Compute an image's signals and make it searchable. Idempotent.

    Raises ``ImageError`` (permanent) after recording it on the row; storage
    errors propagate so the task can retry.
    """
    from django.core.files.storage import default_storage

    from matching.core.loading import load_image

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
    _apply_signals(image, computed)
    with transaction.atomic():
        # Claim: only the delivery that moves pending -> indexed bumps the index.
        changed = ProtectedImage.objects.filter(pk=image_id, status=ProtectedImage.Status.PENDING).update(
            status=image.status, signals=image.signals, phash=image.phash, pdq=image.pdq,
            pdq_quality=image.pdq_quality, embedding=image.embedding, features=image.features.name,
            indexed_at=image.indexed_at, failure_reason="",
        )
        if changed:
            _bump_generation(image.organisation_id)
        else:
            name = image.features.name
            transaction.on_commit(lambda: _delete_files([name]))  # an earlier delivery won
    image.refresh_from_db()
    return image


@transaction.atomic
def protected_image_delete(*, image: ProtectedImage) -> None:
    """Remove the row, its index entries (via the generation) and, after commit, its files."""
    names = [image.file.name, image.features.name]
    organisation_id = image.organisation_id
    image.delete()
    _bump_generation(organisation_id)
    transaction.on_commit(lambda: _delete_files(names))
