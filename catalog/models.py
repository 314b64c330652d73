"""Organisations, members, invitations, API keys, collections and protected images."""
from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.core.validators import validate_email
from django.db import models
from django.utils import timezone
from django.core.exceptions import ValidationError


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank = more rights. A role may do what any lower role may do.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK.get(Role(role), -1) >= ROLE_RANK[Role(minimum)]


class Organisation(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
    # Bumped on every index change so matching processes know their in-memory
    # index is stale without scanning the image table.
    index_generation = models.BigIntegerField(default=0, editable=False)
    # How long the signals of past suspects (checked images, scanned images) are kept, so that images
    # protected later are searched for in them (matching/retro.py). 0 keeps none.
    suspect_retention_days = models.PositiveIntegerField(
        default=90, help_text="Days the signals of checked and scanned images are kept for retroactive "
                              "re-checks (0: keep none).")

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="uniq_membership")]
        ordering = ["organisation__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organisation} ({self.role})"


def hash_token(token: str) -> str:
    # Tokens are 256 random bits: one SHA-256 suffices and keeps lookups indexed.
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "portal_invitation"  # created by the portal app; moved without copying
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.email} → {self.organisation} ({self.role})"

    @property
    def is_open(self) -> bool:
        return self.accepted is None and self.revoked is None and self.expires > timezone.now()


def hash_api_secret(secret: str) -> str:
    # Secrets are 256 random bits, so one SHA-256 is enough (no slow KDF needed,
    # unlike passwords); it keeps authentication a single indexed lookup.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    prefix = models.CharField(max_length=16, unique=True, help_text="Visible part of the key, to tell keys apart.")
    hashed_secret = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    # Why, when the service revoked it (its creator left or was demoted; docs/security.md).
    revoked_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked is None


def validate_email_list(value: str) -> None:
    for address in split_emails(value):
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ValidationError(f"{address!r} is not a valid e-mail address.") from exc


def split_emails(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").replace(";", ",").split(",") if part.strip()]


class AlertFrequency(models.TextChoices):
    IMMEDIATE = "immediate", "Immediately"
    HOURLY = "hourly", "Hourly digest"
    DAILY = "daily", "Daily digest"
    NEVER = "never", "Never"


class Collection(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="collections")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    alert_emails = models.TextField(
        blank=True, validators=[validate_email_list], help_text="Comma-separated addresses told about new matches."
    )
    alert_frequency = models.CharField(max_length=16, choices=AlertFrequency.choices,
                                       default=AlertFrequency.IMMEDIATE)
    # Optional tightening of the service's near-duplicate threshold; never loosened.
    phash_max_distance = models.PositiveSmallIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organisation", "slug"], name="uniq_collection_slug")]
        ordering = ["organisation__slug", "slug"]

    def __str__(self) -> str:
        return self.name

    @property
    def alert_recipients(self) -> list[str]:
        return split_emails(self.alert_emails)


def protected_upload_to(instance: "ProtectedImage", filename: str) -> str:
    # Named from the decoded format, never from the uploader's name (catalog/files.py).
    from catalog.files import extension_for

    ext = extension_for(instance.format)
    return f"protected/{instance.organisation_id}/{instance.collection_id}/{uuid.uuid4().hex}.{ext}"


def features_upload_to(instance: "ProtectedImage", filename: str) -> str:
    return f"features/{instance.organisation_id}/{uuid.uuid4().hex}.npz"


def mark_upload_to(instance: "ProtectedImage", filename: str) -> str:
    return f"marks/{instance.organisation_id}/{uuid.uuid4().hex}.png"


class ProtectedImage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    # Denormalised from the collection so every tenant filter is one indexed column.
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="images")
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="images")
    key = models.CharField(max_length=1024)
    file = models.FileField(upload_to=protected_upload_to, max_length=300)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256_bytes = models.CharField(max_length=64, db_index=True)
    sha256_pixels = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    failure_reason = models.TextField(blank=True)
    signals = models.JSONField(null=True, blank=True)
    # pHash as a signed 64-bit integer (the DB has no unsigned type) so the
    # matcher can load (id, hash) pairs without parsing JSON.
    phash = models.BigIntegerField(null=True, blank=True)
    pdq = models.CharField(max_length=64, blank=True)  # 256-bit PDQ as hex; "" when too flat to use
    pdq_quality = models.PositiveSmallIntegerField(default=0)
    # L2-normalised CNN embedding as float16 bytes (512 bytes for 256-d).
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    # Which network made ``embedding`` and ``mark_embeddings`` (``matching.core.cnn.embedder.model_id``;
    # "" when unknown: rows embedded before it was recorded). Vectors of another network are left out of
    # the CNN index until ``manage.py reembed`` computes them again (docs/training/embedder.md).
    embedding_model = models.CharField(max_length=64, blank=True, default="", editable=False)
    # Local features for geometric verification (npz bytes), computed once at indexing.
    features = models.FileField(upload_to=features_upload_to, max_length=300, blank=True)
    # The mark alone when the picture is a logo on a flat background or has transparency: an RGBA
    # PNG, its alpha the extracted mask (docs/matching.md, "Marks"); its box in the picture's pixels
    # and where the mask came from ({"box": [x0, y0, x1, y1], "source": "alpha" | "background"});
    # the CNN embeddings of its views (float16 bytes, 512 a view). Empty without a mark.
    mark = models.FileField(upload_to=mark_upload_to, max_length=300, blank=True)
    mark_info = models.JSONField(null=True, blank=True)
    mark_embeddings = models.BinaryField(null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    indexed_at = models.DateTimeField(null=True, blank=True)
    # Why copies of this image may go unfound (matching/protection.py, thresholds in docs/self-test.md):
    # [{"code": "tiny" | "flat" | "few_features" | "near_duplicate", "reason": "...", "image_id": <the
    # other image, near_duplicate only>}]; [] when nothing was found wrong.
    protection_flags = models.JSONField(default=list, blank=True)
    keypoint_count = models.PositiveIntegerField(null=True, blank=True,
                                                 help_text="Local features found at indexing (ORB keypoints).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["collection", "key"], name="uniq_image_key")]
        indexes = [models.Index(fields=["organisation", "status"], name="image_org_status")]
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.key


class DeletionReceipt(models.Model):
    """What one deletion removed, signed so it can be checked later (catalog/receipts.py, docs/receipts.md).

    The organisation is kept as plain fields, not a foreign key: a receipt outlives the organisation it
    tells about (deleting an organisation writes one). No pixel is kept, only names, sizes and SHA-256s.
    """

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        COLLECTION = "collection", "Collection"
        ORGANISATION = "organisation", "Organisation"

    uuid = models.UUIDField(unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    organisation_id = models.BigIntegerField(db_index=True)
    organisation_slug = models.CharField(max_length=64)
    organisation_name = models.CharField(max_length=200)
    subject_id = models.BigIntegerField()
    subject_label = models.CharField(max_length=1024)
    deleted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="deletion_receipts")
    deleted_by_label = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(db_index=True)
    body = models.JSONField()  # the signed receipt, exactly as signed (canonical form: catalog/receipts.py)
    signature = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["organisation_id", "-created"], name="receipt_org_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} “{self.subject_label}” deleted {self.created:%Y-%m-%d %H:%M}"
