"""Writes for the catalogue (docs/coding-habits.md, habit 1): typed, keyword-only, atomic.

Organisations, members and their invitations, API keys, collections, and the
removal of protected images. Adding and indexing an image needs the matching
engine, so it lives in ``matching.protection``.

Role rules for members live here, not in templates: an admin manages members up to
admin; only an owner grants, changes or removes the owner role; an organisation
never loses its last owner.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from catalog.models import (
    ApiKey, Collection, DeletionReceipt, Invitation, Membership, Organisation, ProtectedImage, Role, hash_api_secret,
    hash_token, role_at_least,
)
from catalog.deletion import purge_collection, purge_images, purge_organisation, stored_files_delete
from catalog.receipts import SYSTEM, Actor, receipt_record
from catalog.validators import one_line, single_line
from imgprotect.dispatch import enqueue_on_commit
from imgprotect.errors import Conflict, Forbidden, ServiceError

log = logging.getLogger(__name__)


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
def organisation_create(*, slug: str, name: str | None = None, owner: User | None = None) -> Organisation:
    names_validate(name=name or slug)
    org = Organisation.objects.create(slug=slugify(slug) or "org", name=name or slug)
    if owner is not None:
        Membership.objects.create(user=owner, organisation=org, role=Role.OWNER)
    return org


@transaction.atomic
def organisation_delete(*, organisation: Organisation, actor: Actor = SYSTEM) -> DeletionReceipt:
    """Remove the organisation with all its rows and, after commit, every file and index snapshot it had;
    the signed receipt of it all outlives it (catalog/receipts.py)."""
    purge = purge_organisation(organisation)
    organisation_id = organisation.pk
    purge.deleted(organisation.delete())
    purge.after_commit()
    return receipt_record(purge=purge, kind=DeletionReceipt.Kind.ORGANISATION, organisation=organisation,
                          organisation_id=organisation_id, subject_id=organisation_id,
                          subject_label=organisation.name, actor=actor)


# Ten years: long enough for any policy, short enough that a typo of extra digits is refused.
MAX_SUSPECT_RETENTION_DAYS = 3650


@transaction.atomic
def organisation_suspect_retention_set(*, organisation: Organisation, days: int) -> Organisation:
    """How many days the signals of checked and scanned images are kept for retroactive re-checks
    (0: none). Signals past the new limit are deleted once this commits (``purge_suspect_signals``)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_SUSPECT_RETENTION_DAYS:
        raise ServiceError(f"The retention must be a whole number of days from 0 to {MAX_SUSPECT_RETENTION_DAYS}.",
                           code="invalid_retention")
    Organisation.objects.filter(pk=organisation.pk).update(suspect_retention_days=days)
    organisation.suspect_retention_days = days
    enqueue_on_commit("workers.tasks.purge_suspect_signals", organisation.pk)
    return organisation


def organisation_get_or_create(*, slug: str) -> Organisation:
    org = Organisation.objects.filter(slug=slugify(slug)).first()
    return org or organisation_create(slug=slug, name=slug)


@transaction.atomic
def membership_set(*, organisation: Organisation, user: User, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        organisation=organisation, user=user, defaults={"role": Role(role)}
    )
    return membership


# --- invitations and members -------------------------------------------------------

@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # only in the e-mail; the row keeps its hash


def _may_grant(actor_role: str, role: str) -> bool:
    return role_at_least(actor_role, Role.OWNER) or (role_at_least(actor_role, Role.ADMIN) and role != Role.OWNER)


@transaction.atomic
def invitation_create(*, organisation: Organisation, email: str, role: str, invited_by: User,
                      actor_role: str) -> IssuedInvitation:
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ServiceError(f"{email!r} is not a valid e-mail address.", code="invalid_email") from None
    if role not in Role.values:
        raise ServiceError("Unknown role.", code="invalid_role")
    if not _may_grant(actor_role, role):
        raise Forbidden("Only an owner may invite owners.")
    if Membership.objects.filter(organisation=organisation, user__email__iexact=email).exists():
        raise ServiceError(f"{email} is already a member.", code="already_member")
    # A new invitation replaces any open one for the same address.
    Invitation.objects.filter(organisation=organisation, email=email, accepted__isnull=True,
                              revoked__isnull=True).update(revoked=timezone.now())
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organisation=organisation, email=email, role=role, token_hash=hash_token(token), invited_by=invited_by,
        expires=timezone.now() + timedelta(days=settings.IMGPROTECT_INVITATION_DAYS),
    )
    transaction.on_commit(lambda: _send_invitation(invitation, token))
    return IssuedInvitation(invitation, token)


def _send_invitation(invitation: Invitation, token: str) -> None:
    context = {
        "invitation": invitation,
        "organisation": invitation.organisation,
        "inviter": invitation.invited_by,
        "url": settings.SITE_URL + reverse("portal:invitation", args=[token]),
        "site_url": settings.SITE_URL,
    }
    message = EmailMultiAlternatives(
        subject=one_line(f"[imgprotect] You are invited to {invitation.organisation.name}"),
        body=render_to_string("portal/email/invitation.txt", context),
        to=[invitation.email],
    )
    message.attach_alternative(render_to_string("portal/email/invitation.html", context), "text/html")
    message.send()


def invitation_for_token(token: str) -> Invitation | None:
    return Invitation.objects.select_related("organisation", "invited_by").filter(token_hash=hash_token(token)).first()


def invitation_is_for(*, invitation: Invitation, user: User) -> bool:
    """Whether ``user`` is the person invited: their account's e-mail is the invited address.

    Accounts cannot change their own address in the portal (only through the admin), and an
    account made from an invitation gets the invited address, so the account's e-mail is the
    verified one.
    """
    email = (getattr(user, "email", "") or "").strip()
    return bool(email) and email.casefold() == invitation.email.strip().casefold()


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    invitation = invitation_for_token(token)
    if invitation is None or not invitation.is_open:
        raise ServiceError("This invitation is no longer valid. Ask for a new one.", code="invitation_invalid")
    if not invitation_is_for(invitation=invitation, user=user):
        # The link alone proves nothing: it may have been forwarded or leaked (docs/security.md).
        raise Forbidden(f"This invitation was sent to another e-mail address than the one of "
                        f"{user.get_username()}.", code="invitation_wrong_account")
    claimed = Invitation.objects.filter(pk=invitation.pk, accepted__isnull=True, revoked__isnull=True).update(
        accepted=timezone.now(), accepted_by=user)
    if not claimed:
        raise ServiceError("This invitation has already been used.", code="invitation_invalid")
    existing = Membership.objects.filter(organisation=invitation.organisation, user=user).first()
    if existing is not None and role_at_least(existing.role, invitation.role):
        return existing  # an invitation never demotes
    return membership_set(organisation=invitation.organisation, user=user, role=invitation.role)


@transaction.atomic
def invitation_signup(*, token: str, username: str, password: str) -> User:
    """Create an account for an invited address and accept the invitation in one step."""
    invitation = invitation_for_token(token)
    if invitation is None or not invitation.is_open:
        raise ServiceError("This invitation is no longer valid. Ask for a new one.", code="invitation_invalid")
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise ServiceError("That user name is taken.", code="username_taken")
    user = User.objects.create_user(username=username, email=invitation.email, password=password)
    invitation_accept(token=token, user=user)
    return user


def invitation_revoke(*, invitation: Invitation) -> None:
    Invitation.objects.filter(pk=invitation.pk, accepted__isnull=True).update(revoked=timezone.now())


def _owner_count(organisation: Organisation) -> int:
    return Membership.objects.filter(organisation=organisation, role=Role.OWNER).count()


@transaction.atomic
def member_role_set(*, membership: Membership, role: str, actor_role: str) -> Membership:
    if role not in Role.values:
        raise ServiceError("Unknown role.", code="invalid_role")
    if Role.OWNER in (role, membership.role) and not role_at_least(actor_role, Role.OWNER):
        raise Forbidden("Only an owner may grant or change the owner role.")
    if not _may_grant(actor_role, role):
        raise Forbidden("Your role cannot grant this role.")
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(membership.organisation) <= 1:
        raise ServiceError("An organisation needs at least one owner.", code="last_owner")
    return membership_set(organisation=membership.organisation, user=membership.user, role=role)


@transaction.atomic
def member_remove(*, membership: Membership, actor_role: str) -> None:
    if membership.role == Role.OWNER:
        if not role_at_least(actor_role, Role.OWNER):
            raise Forbidden("Only an owner may remove an owner.")
        if _owner_count(membership.organisation) <= 1:
            raise ServiceError("An organisation needs at least one owner.", code="last_owner")
    membership.delete()


# --- API keys ----------------------------------------------------------------

@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once; only its hash is stored


@transaction.atomic
def api_key_create(
    *, organisation: Organisation, name: str, role: str = Role.MEMBER, created_by: User | None = None
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


def api_key_revoke(*, key: ApiKey, reason: str = "") -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked__isnull=True).update(revoked=timezone.now(), revoked_reason=reason[:200])
    key.refresh_from_db()
    return key


def api_keys_revoke_for_member(*, organisation_id: int, user: User, role: str | None,
                               reason: str) -> int:
    """Revoke the keys ``user`` made in an organisation that outrank ``role`` (None: all of them).

    A key acts with the rights of its creator at the time it was made; when the creator
    leaves (role None) or is demoted, keys above their new role must not outlive that
    (docs/security.md). Returns how many keys were revoked.
    """
    keys = ApiKey.objects.filter(organisation_id=organisation_id, created_by=user, revoked__isnull=True)
    if role is not None:
        keys = keys.filter(role__in=[r for r in Role.values if not role_at_least(role, r)])
    return keys.update(revoked=timezone.now(), revoked_reason=reason[:200])


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
def collection_delete(*, collection: Collection, actor: Actor = SYSTEM) -> DeletionReceipt:
    """Remove the collection, its images and everything derived from them (catalog/deletion.py); answer
    the signed receipt (catalog/receipts.py)."""
    purge = purge_collection(collection)
    organisation_id, collection_id = collection.organisation_id, collection.pk
    purge.deleted(collection.delete())
    index_generation_bump(organisation_id=organisation_id)
    purge.after_commit()
    return receipt_record(purge=purge, kind=DeletionReceipt.Kind.COLLECTION, organisation=collection.organisation,
                          organisation_id=organisation_id, subject_id=collection_id,
                          subject_label=collection.name, actor=actor,
                          subject={"slug": collection.slug})


# --- protected images -----------------------------------------------------------

def index_generation_bump(*, organisation_id: int) -> None:
    """Tell every matching process that the organisation's index changed (see matching/index_registry.py)."""
    Organisation.objects.filter(pk=organisation_id).update(index_generation=F("index_generation") + 1)


@transaction.atomic
def protected_image_delete(*, image: ProtectedImage, actor: Actor = SYSTEM) -> DeletionReceipt:
    """Remove the row, its index entries (dropped in this process at commit, elsewhere via the generation)
    and, after commit, its files and every file derived from it (catalog/deletion.py); answer the signed
    receipt (catalog/receipts.py)."""
    purge = purge_images(ProtectedImage.objects.filter(pk=image.pk))
    organisation_id, image_id = image.organisation_id, image.pk
    collection = image.collection
    purge.deleted(image.delete())
    index_generation_bump(organisation_id=organisation_id)
    purge.after_commit()
    return receipt_record(purge=purge, kind=DeletionReceipt.Kind.IMAGE, organisation=collection.organisation,
                          organisation_id=organisation_id, subject_id=image_id, subject_label=image.key,
                          actor=actor,
                          subject={"collection": {"id": collection.pk, "name": collection.name},
                                   "sha256_bytes": image.sha256_bytes, "sha256_pixels": image.sha256_pixels})
