"""Writes the portal makes: invitations, members, alert settings, webhooks, decisions, visits.

Role rules live here, not in templates: an admin manages members up to admin; only an
owner grants, changes or removes the owner role; an organisation never loses its last owner.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from catalog.models import AlertFrequency, Collection, Membership, Organisation, Role, role_at_least
from catalog.services import ServiceError, collection_update, membership_set, names_validate
from catalog.validators import one_line
from matching.core.loading import LoadedImage
from matching.models import Check
from matching.portal.models import (
    CheckOrigin, DismissedPair, Invitation, Licence, PortalVisit, Webhook, hash_token, new_webhook_secret,
)


class Forbidden(ServiceError):
    code = "forbidden"
    status = 403


# --- invitations and members -------------------------------------------------------

@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # only in the e-mail; the row keeps its hash


def _may_grant(actor_role: str, role: str) -> bool:
    return role_at_least(actor_role, Role.OWNER) or (role_at_least(actor_role, Role.ADMIN) and role != Role.OWNER)


@transaction.atomic
def invitation_create(*, organisation: Organisation, email: str, role: str, invited_by: AbstractBaseUser,
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


@transaction.atomic
def invitation_accept(*, token: str, user: AbstractBaseUser) -> Membership:
    invitation = invitation_for_token(token)
    if invitation is None or not invitation.is_open:
        raise ServiceError("This invitation is no longer valid. Ask for a new one.", code="invitation_invalid")
    claimed = Invitation.objects.filter(pk=invitation.pk, accepted__isnull=True, revoked__isnull=True).update(
        accepted=timezone.now(), accepted_by=user)
    if not claimed:
        raise ServiceError("This invitation has already been used.", code="invitation_invalid")
    existing = Membership.objects.filter(organisation=invitation.organisation, user=user).first()
    if existing is not None and role_at_least(existing.role, invitation.role):
        return existing  # an invitation never demotes
    return membership_set(organisation=invitation.organisation, user=user, role=invitation.role)


@transaction.atomic
def invitation_signup(*, token: str, username: str, password: str) -> AbstractBaseUser:
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


# --- collections: alerts and thresholds ----------------------------------------------

@transaction.atomic
def collection_alerts_set(*, collection: Collection, alert_emails: str, alert_frequency: str) -> Collection:
    if alert_frequency not in AlertFrequency.values:
        raise ServiceError("Unknown alert frequency.", code="invalid_frequency")
    return collection_update(collection=collection, alert_emails=alert_emails, alert_frequency=alert_frequency)


def collection_threshold_set(*, collection: Collection, phash_max_distance: int | None) -> Collection:
    if phash_max_distance is not None and not 0 <= phash_max_distance <= 64:
        raise ServiceError("The pHash distance must be between 0 and 64 bits.", code="invalid_threshold")
    return collection_update(collection=collection, phash_max_distance=phash_max_distance)


# --- checks submitted in the portal -----------------------------------------------------

@transaction.atomic
def portal_check_submit(*, organisation: Organisation, data: bytes, loaded: LoadedImage, filename: str,
                        collection: Collection | None, found_at: str, user: AbstractBaseUser) -> Check:
    """Submit a check and record where the suspect was found, before matching can run.

    The outer transaction holds back check_submit's on-commit matching until the
    origin row exists, so licences for that source apply to this very check.
    """
    from matching.services import check_submit

    check = check_submit(organisation=organisation, data=data, loaded=loaded, filename=filename,
                         collection=collection, submitted_by=user)
    if found_at.strip():
        CheckOrigin.objects.create(source_check=check, source=found_at.strip()[:500])
    return check


# --- webhooks ---------------------------------------------------------------------------

@transaction.atomic
def webhook_create(*, organisation: Organisation, url: str, description: str = "", active: bool = True,
                   created_by: AbstractBaseUser | None = None) -> Webhook:
    from matching.portal.webhooks import webhook_url_validate

    webhook_url_validate(url)
    names_validate(description=description)
    return Webhook.objects.create(organisation=organisation, url=url.strip(), description=description.strip(),
                                  active=active, created_by=created_by)


@transaction.atomic
def webhook_update(*, webhook: Webhook, url: str, description: str, active: bool) -> Webhook:
    from matching.portal.webhooks import webhook_url_validate

    if url.strip() != webhook.url:
        webhook_url_validate(url)
    names_validate(description=description)
    webhook.url, webhook.description, webhook.active = url.strip(), description.strip(), active
    webhook.save(update_fields=["url", "description", "active"])
    return webhook


def webhook_rotate_secret(*, webhook: Webhook) -> Webhook:
    webhook.secret = new_webhook_secret()
    webhook.save(update_fields=["secret"])
    return webhook


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()


# --- standing decisions ---------------------------------------------------------------------

def licence_revoke(*, licence: Licence) -> None:
    Licence.objects.filter(pk=licence.pk, revoked__isnull=True).update(revoked=timezone.now())


def dismissed_pair_delete(*, pair: DismissedPair) -> None:
    pair.delete()


# --- visits -----------------------------------------------------------------------------------

def visit_touch(*, user: AbstractBaseUser, organisation: Organisation, now: datetime | None = None) -> datetime | None:
    """Record that ``user`` is here now; return when they were last here before (None: first visit)."""
    now = now or timezone.now()
    visit, created = PortalVisit.objects.get_or_create(user=user, organisation=organisation,
                                                       defaults={"last_seen": now})
    if created:
        return None
    previous = visit.last_seen
    # A minute's precision is enough; it keeps page views from writing on every request.
    PortalVisit.objects.filter(pk=visit.pk, last_seen__lt=now - timedelta(minutes=1)).update(last_seen=now)
    return previous
