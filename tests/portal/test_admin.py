"""The review, invitation and webhook rows have working admin pages; the audit trail cannot be edited there."""
from __future__ import annotations

import pytest
from django.test import Client

from catalog.models import Invitation, Role
from catalog.services import invitation_create
from matching.models import DismissedPair, Licence, ReviewEvent, Webhook, WebhookDelivery
from matching.review import Decision, LicenceTerms, match_review


@pytest.mark.parametrize("model", [ReviewEvent, Licence, DismissedPair, Invitation, Webhook])
def test_admin_pages(world, model):
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.DISMISS, actor=None)
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.LICENSE, actor=None,
                 licence=LicenceTerms("Partner"))
    invitation_create(organisation=world.org, email="x@acme.test", role=Role.VIEWER, invited_by=world.users[Role.OWNER],
                      actor_role=Role.OWNER)
    hook = Webhook.objects.create(organisation=world.org, url="https://93.184.216.34/h")
    WebhookDelivery.objects.create(webhook=hook, event="ping", event_key="k", payload={})
    staff = world.users[Role.OWNER]
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    assert client.get(base).status_code == 200
    obj = model.objects.first()
    page = client.get(f"{base}{obj.pk}/change/")
    assert page.status_code == 200
    assert b"whsec_" not in page.content and b"token_hash" not in page.content
    if model is ReviewEvent:
        assert client.get(base + "add/").status_code == 403
        assert b'name="_save"' not in page.content
