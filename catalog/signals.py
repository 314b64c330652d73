"""Membership changes revoke the API keys their member made above their new rights.

Signals, not only the portal's services, because memberships also end through the admin
and when a user account is deleted (the cascade runs pre_delete before it clears
ApiKey.created_by); every path must revoke (docs/security.md).
"""
from __future__ import annotations

from django.db.models.signals import pre_delete, pre_save
from django.dispatch import receiver

from catalog.models import Membership, role_at_least
from catalog.services import api_keys_revoke_for_member


@receiver(pre_delete, sender=Membership, dispatch_uid="catalog.membership_removed_revokes_keys")
def _membership_removed(sender, instance: Membership, **kwargs) -> None:
    api_keys_revoke_for_member(organisation_id=instance.organisation_id, user=instance.user, role=None,
                               reason=f"its creator {instance.user.get_username()} left the organisation")


@receiver(pre_save, sender=Membership, dispatch_uid="catalog.membership_demoted_revokes_keys")
def _membership_changed(sender, instance: Membership, raw: bool = False, **kwargs) -> None:
    if raw or instance.pk is None:
        return
    before = Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first()
    if before is None or role_at_least(instance.role, before):
        return
    api_keys_revoke_for_member(organisation_id=instance.organisation_id, user=instance.user, role=instance.role,
                               reason=f"its creator {instance.user.get_username()} became {instance.role}")
