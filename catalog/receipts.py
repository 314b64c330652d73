"""Deletion receipts: what deleting an image, a collection or an organisation removed, signed (docs/receipts.md).

A receipt is written inside the deleting transaction, after the rows went and before the files go (they
are removed after commit, catalog/deletion.py), so each stored file is hashed, streaming, while it still
exists. It lists the rows deleted per model, every stored file with its role, size and SHA-256, the
derived things (cached thumbnails, index snapshot files, bulk work directories) and the index entries
dropped. It is kept without a pixel, and signed with an HMAC-SHA256 over its canonical JSON under a key
derived from ``SECRET_KEY`` (``salted_hmac``), so whoever holds the deployment's key (or the derived key,
which can be handed to an auditor without the secret) can check later that it was not changed.

The canonical JSON is ``json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
in UTF-8, which ``jq -jcS .receipt`` also writes for these receipts (no floats, no control characters).
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from catalog.deletion import Purge, derived_files_requested
from catalog.files import rendition_cache_keys
from catalog.models import ApiKey, DeletionReceipt, Organisation

log = logging.getLogger(__name__)

RECEIPT_FORMAT = "imgprotect.deletion-receipt/1"
KEY_SALT = "imgprotect.catalog.receipts"
ALGORITHM = "HMAC-SHA256"
_CHUNK = 1 << 20  # files are hashed a MiB at a time, never read whole


@dataclass(frozen=True)
class Actor:
    """Who deleted: a portal or admin user, an API key (its creator, when known), or the system."""

    user: User | None
    label: str


SYSTEM = Actor(user=None, label="system")


def actor_of(request: Any) -> Actor:
    """The person or key behind a request (DRF's ``request.auth`` is the ApiKey for key callers)."""
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return Actor(user=key.created_by, label=f"API key {key.prefix}… ({key.name})")
    user = getattr(request, "user", None)
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return SYSTEM
    return Actor(user=user, label=user.get_username())


# --- signing ---------------------------------------------------------------------------------

def canonical(receipt: dict[str, Any]) -> bytes:
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signing_key(secret: str) -> bytes:
    """The HMAC key ``salted_hmac(KEY_SALT, ..., secret, algorithm="sha256")`` uses: SHA-256(salt + secret)."""
    return hashlib.sha256((KEY_SALT + secret).encode("utf-8")).digest()


def key_id(secret: str) -> str:
    """Names the key a receipt was signed with, without revealing it."""
    return hashlib.sha256(signing_key(secret)).hexdigest()[:16]


def sign(receipt: dict[str, Any], secret: str | None = None) -> str:
    return salted_hmac(KEY_SALT, canonical(receipt), secret=secret or settings.SECRET_KEY,
                       algorithm="sha256").hexdigest()


def receipt_document(receipt: DeletionReceipt) -> dict[str, Any]:
    """The downloadable receipt: the signed body and its signature."""
    return {"receipt": receipt.body,
            "signature": {"algorithm": ALGORITHM, "key_id": receipt.key_id, "value": receipt.signature}}


def receipt_download(receipt: DeletionReceipt) -> HttpResponse:
    """The signed receipt as a JSON file (the admin's and the portal's download)."""
    response = HttpResponse(json.dumps(receipt_document(receipt), indent=2, ensure_ascii=False),
                            content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="deletion-receipt-{receipt.uuid}.json"'
    return response


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str  # a sentence after "valid: " or "invalid: "

    def __str__(self) -> str:
        return f"{'valid' if self.valid else 'invalid'}: {self.reason}"


def receipt_verify(document: object) -> Verification:
    """Whether ``document`` (a parsed receipt file) carries a signature of this deployment's key, the
    current one or one of ``SECRET_KEY_FALLBACKS``; never raises on malformed input."""
    if not isinstance(document, dict) or not isinstance(document.get("receipt"), dict) \
            or not isinstance(document.get("signature"), dict):
        return Verification(False, 'not a deletion receipt: expected {"receipt": {...}, "signature": {...}}.')
    body, signature = document["receipt"], document["signature"]
    if body.get("format") != RECEIPT_FORMAT:
        return Verification(False, f"unknown receipt format {str(body.get('format'))[:80]!r}.")
    value = signature.get("value")
    if signature.get("algorithm") != ALGORITHM or not isinstance(value, str):
        return Verification(False, f"the signature must be {ALGORITHM} with a hex value.")
    secrets: list[str] = [str(settings.SECRET_KEY), *map(str, settings.SECRET_KEY_FALLBACKS)]
    for n, secret in enumerate(secrets):
        if constant_time_compare(sign(body, secret), value):
            which = "this deployment's key" if n == 0 else "a previous key of this deployment (SECRET_KEY_FALLBACKS)"
            return Verification(True, f"signed with {which}, unchanged since.")
    return Verification(False, "the receipt was changed after signing, or another deployment signed it.")


# --- what was removed ---------------------------------------------------------------------------

def _file_entry(name: str, role: str) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    try:
        with default_storage.open(name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except Exception as exc:  # noqa: BLE001 - a file already gone (or unreadable on S3) must not block a deletion
        log.warning("receipt: could not hash %s: %s", name, exc)
        return {"name": name, "role": role, "size": None, "sha256": None, "missing": True}
    return {"name": name, "role": role, "size": size, "sha256": digest.hexdigest(), "missing": False}


def _work_dir_entry(path: Path) -> dict[str, Any]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return {"kind": "bulk_work_dir", "name": path.name, "files": len(files),
            "size": sum(p.stat().st_size for p in files)}


def _derived(purge: Purge) -> dict[str, Any]:
    keys = [key for name in purge.files for key in rendition_cache_keys(name)]
    snapshots: list[dict[str, Any]] = []
    for _receiver, answer in derived_files_requested.send(sender=Organisation,
                                                          organisation_ids=sorted(purge.reindex)):
        snapshots.extend(answer if isinstance(answer, list) else [])
    return {
        "thumbnails": len(cache.get_many(keys)) if keys else 0,
        "index_snapshot_files": sorted(snapshots, key=lambda e: str(e.get("name"))),
        "bulk_work_dirs": [_work_dir_entry(p) for p in sorted(purge.work_dirs) if p.exists()],
    }


def receipt_record(*, purge: Purge, kind: str, organisation: Organisation, organisation_id: int, subject_id: int,
                   subject_label: str, actor: Actor, subject: dict[str, Any] | None = None) -> DeletionReceipt:
    """Write the signed receipt of a deletion whose rows are deleted and whose files are not yet: call it
    inside the deleting transaction, after the deletes and ``purge.after_commit()``. ``organisation_id``
    is passed apart: a deleted organisation's ``pk`` is None by then."""
    now = timezone.now()
    receipt_uuid = uuid.uuid4()
    files = [_file_entry(name, purge.roles.get(name, "file")) for name in sorted(purge.files)]
    body: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "id": str(receipt_uuid),
        "kind": kind,
        "subject": {"id": subject_id, "label": subject_label, **(subject or {})},
        "organisation": {"id": organisation_id, "slug": organisation.slug, "name": organisation.name},
        "deleted_at": now.isoformat(),
        "deleted_by": {"user_id": actor.user.pk if actor.user is not None else None, "label": actor.label},
        "rows": dict(sorted(purge.rows.items())),
        "files": files,
        "derived": _derived(purge),
        "index_entries": {
            "image_ids": sorted(pk for ids in purge.index_ids.values() for pk in ids),
            "phash": purge.index_entries["phash"], "pdq": purge.index_entries["pdq"],
            "vectors": purge.index_entries["vectors"],
        },
        "totals": {"rows": sum(purge.rows.values()), "files": len(files),
                   "bytes": sum(f["size"] or 0 for f in files)},
    }
    return DeletionReceipt.objects.create(
        uuid=receipt_uuid, kind=kind, organisation_id=organisation_id, organisation_slug=organisation.slug,
        organisation_name=organisation.name, subject_id=subject_id, subject_label=subject_label[:1024],
        deleted_by=actor.user, deleted_by_label=actor.label[:200], created=now, body=body,
        signature=sign(body), key_id=key_id(settings.SECRET_KEY),
    )


# --- reads --------------------------------------------------------------------------------------

def receipt_list(*, organisation_id: int) -> QuerySet[DeletionReceipt]:
    """An organisation's receipts, newest first (a live organisation's own: tenant-scoped by id)."""
    return DeletionReceipt.objects.filter(organisation_id=organisation_id).select_related("deleted_by")


def receipt_get(*, organisation_id: int, receipt_id: int) -> DeletionReceipt | None:
    return receipt_list(organisation_id=organisation_id).filter(pk=receipt_id).first()


def receipts_of_deleted_organisations(*, user: User) -> QuerySet[DeletionReceipt]:
    """The receipts of organisations ``user`` deleted: nobody is a member of a deleted organisation any
    more, so the deleting user reads them from their account page (and staff in the admin)."""
    return DeletionReceipt.objects.filter(kind=DeletionReceipt.Kind.ORGANISATION, deleted_by=user)
