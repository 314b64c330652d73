"""Moving the portal's domain models into catalog and matching keeps every row, id and foreign key.

The migrations only move Django's model state (the tables keep their portal_* names), so a
database written under the old layout reads the same through the new models.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management.color import no_style
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from catalog.models import Invitation
from matching.models import CheckOrigin, DismissedPair, Licence, ReviewEvent, Webhook, WebhookDelivery

BEFORE = [("portal", "0001_initial"), ("catalog", "0002_signals_pdq_embedding_features"),
          ("matching", "0002_check_partial_search")]


def _migrate(targets):  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():  # type: ignore[no-untyped-def]
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _old_rows(apps) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """One row of each moved model, written through the portal app's historical models."""
    user = apps.get_model("auth", "User").objects.create(username="owner")
    org = apps.get_model("catalog", "Organisation").objects.create(slug="acme", name="Acme")
    collection = apps.get_model("catalog", "Collection").objects.create(organisation=org, slug="logos", name="Logos")
    image = apps.get_model("catalog", "ProtectedImage").objects.create(
        organisation=org, collection=collection, key="logo.png", file="x.png", sha256_bytes="a" * 64,
        sha256_pixels="b" * 64, width=10, height=10, format="PNG")
    check = apps.get_model("matching", "Check").objects.create(organisation=org, file="c.png")
    match = apps.get_model("matching", "Match").objects.create(
        source_check=check, organisation=org, protected_image=image, score=0.9, verdict="exact")
    portal = {name: apps.get_model("portal", name) for name in (
        "Invitation", "ReviewEvent", "Licence", "DismissedPair", "CheckOrigin", "Webhook", "WebhookDelivery")}
    # Ids well past 1, so a table recreated empty could not pass by accident.
    invitation = portal["Invitation"].objects.create(
        id=41, organisation=org, email="new@acme.test", role="viewer", token_hash="f" * 64, invited_by=user,
        expires=timezone.now() + timedelta(days=7))
    event = portal["ReviewEvent"].objects.create(id=42, organisation=org, match=match, action="confirmed",
                                                 from_status="new", to_status="confirmed", actor=user, note="ok")
    licence = portal["Licence"].objects.create(id=43, organisation=org, protected_image=image, holder="Partner",
                                               source="example.com", origin_match=match, created_by=user)
    pair = portal["DismissedPair"].objects.create(id=44, organisation=org, protected_image=image,
                                                  suspect_sha256="c" * 64, origin_match=match, dismissed_by=user)
    origin = portal["CheckOrigin"].objects.create(id=45, source_check=check, source="https://example.com/a")
    hook = portal["Webhook"].objects.create(id=46, organisation=org, url="https://example.com/hook", secret="whsec_x",
                                            created_by=user)
    delivery = portal["WebhookDelivery"].objects.create(id=47, webhook=hook, event="ping", event_key="ping:1",
                                                        payload={"type": "ping"})
    # Explicit ids do not move PostgreSQL's sequences: move them as loaddata does, so the next row the
    # new models write continues after these (whatever ids earlier tests of this database used).
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), list(portal.values())):
            cursor.execute(sql)
    return {"user": user.pk, "org": org.pk, "image": image.pk, "check": check.pk, "match": match.pk,
            "invitation": invitation.pk, "event": event.pk, "licence": licence.pk, "pair": pair.pk,
            "origin": origin.pk, "hook": hook.pk, "delivery": delivery.pk}


@pytest.mark.django_db(transaction=True)
def test_rows_written_under_the_portal_app_read_the_same_through_the_new_models():
    latest = _latest()
    try:
        ids = _old_rows(_migrate(BEFORE))
        ContentType.objects.get_or_create(app_label="portal", model="licence")
        ContentType.objects.filter(app_label="matching", model="licence").delete()
        _migrate(latest)
    finally:
        _migrate(latest)  # leave the schema as every other test expects it

    invitation = Invitation.objects.get(pk=ids["invitation"])
    assert (invitation.organisation_id, invitation.invited_by_id, invitation.email) == (ids["org"], ids["user"],
                                                                                       "new@acme.test")
    event = ReviewEvent.objects.get(pk=ids["event"])
    assert (event.match_id, event.actor_id, event.organisation_id, event.note) == (ids["match"], ids["user"],
                                                                                  ids["org"], "ok")
    licence = Licence.objects.get(pk=ids["licence"])
    assert (licence.protected_image_id, licence.origin_match_id, licence.holder) == (ids["image"], ids["match"],
                                                                                    "Partner")
    pair = DismissedPair.objects.get(pk=ids["pair"])
    assert (pair.protected_image_id, pair.origin_match_id, pair.dismissed_by_id) == (ids["image"], ids["match"],
                                                                                    ids["user"])
    assert CheckOrigin.objects.get(pk=ids["origin"]).source_check_id == ids["check"]
    hook = Webhook.objects.get(pk=ids["hook"])
    assert (hook.organisation_id, hook.secret) == (ids["org"], "whsec_x")
    assert WebhookDelivery.objects.get(pk=ids["delivery"]).webhook_id == ids["hook"]
    # Reverse relations work across the apps now owning both ends.
    assert list(hook.deliveries.values_list("pk", flat=True)) == [ids["delivery"]]
    assert list(event.match.review_events.values_list("pk", flat=True)) == [ids["event"]]
    # The content type moved with the model, so permissions granted on it still apply.
    assert ContentType.objects.filter(app_label="matching", model="licence").exists()
    assert not ContentType.objects.filter(app_label="portal", model="licence").exists()
    # New rows continue the same tables.
    again = Licence.objects.create(organisation_id=ids["org"], protected_image_id=ids["image"], holder="Other")
    assert again.pk > ids["licence"]
