"""The portal keeps only UI state: its domain models now belong to catalog and matching (their
migrations 0003), which took over the tables as they are."""
from django.db import migrations

MOVED = {"invitation": "catalog", "reviewevent": "matching", "licence": "matching", "dismissedpair": "matching",
         "checkorigin": "matching", "webhook": "matching", "webhookdelivery": "matching"}


def _relabel(apps, schema_editor, backwards: bool = False) -> None:
    """Move the content types too, so permissions granted on these models and admin log entries follow."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model, app in MOVED.items():
        old, new = ("portal", app) if not backwards else (app, "portal")
        if not ContentType.objects.using(db).filter(app_label=new, model=model).exists():
            ContentType.objects.using(db).filter(app_label=old, model=model).update(app_label=new)


def _relabel_back(apps, schema_editor) -> None:
    _relabel(apps, schema_editor, backwards=True)


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0001_initial'),
        # The new owners' state exists first, so the models are never absent in between.
        ('catalog', '0003_invitation_from_portal'),
        ('matching', '0003_review_and_webhooks_from_portal'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The table stays where it is, rows and ids included; only Django's model state moves.
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='dismissedpair',
                    name='dismissed_by',
                ),
                migrations.RemoveField(
                    model_name='dismissedpair',
                    name='organisation',
                ),
                migrations.RemoveField(
                    model_name='dismissedpair',
                    name='origin_match',
                ),
                migrations.RemoveField(
                    model_name='dismissedpair',
                    name='protected_image',
                ),
                migrations.RemoveField(
                    model_name='invitation',
                    name='accepted_by',
                ),
                migrations.RemoveField(
                    model_name='invitation',
                    name='invited_by',
                ),
                migrations.RemoveField(
                    model_name='invitation',
                    name='organisation',
                ),
                migrations.RemoveField(
                    model_name='licence',
                    name='created_by',
                ),
                migrations.RemoveField(
                    model_name='licence',
                    name='organisation',
                ),
                migrations.RemoveField(
                    model_name='licence',
                    name='origin_match',
                ),
                migrations.RemoveField(
                    model_name='licence',
                    name='protected_image',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='actor',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='match',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='organisation',
                ),
                migrations.RemoveField(
                    model_name='webhook',
                    name='created_by',
                ),
                migrations.RemoveField(
                    model_name='webhook',
                    name='organisation',
                ),
                migrations.RemoveField(
                    model_name='webhookdelivery',
                    name='webhook',
                ),
                migrations.DeleteModel(
                    name='CheckOrigin',
                ),
                migrations.DeleteModel(
                    name='DismissedPair',
                ),
                migrations.DeleteModel(
                    name='Invitation',
                ),
                migrations.DeleteModel(
                    name='Licence',
                ),
                migrations.DeleteModel(
                    name='ReviewEvent',
                ),
                migrations.DeleteModel(
                    name='Webhook',
                ),
                migrations.DeleteModel(
                    name='WebhookDelivery',
                ),
            ],
        ),
        migrations.RunPython(_relabel, _relabel_back),
    ]
