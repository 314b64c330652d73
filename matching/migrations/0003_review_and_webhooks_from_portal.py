"""Review events, licences, dismissed pairs, check origins and webhooks (with their deliveries) move from
the portal app to matching, the domain that writes them; their tables keep their names."""
import django.db.models.deletion
import matching.models
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('matching', '0002_check_partial_search'),
        # The portal_* tables are the portal app's; they must exist before this state claims them.
        ('portal', '0001_initial'),
        ('catalog', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The table stays where it is, rows and ids included; only Django's model state moves.
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='CheckOrigin',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('source', models.CharField(max_length=500)),
                        ('source_check', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='origin', to='matching.check')),
                    ],
                    options={
                        'db_table': 'portal_checkorigin',
                    },
                ),
                migrations.CreateModel(
                    name='DismissedPair',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('suspect_sha256', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('suspect_sha256_pixels', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('suspect_key', models.CharField(blank=True, max_length=1024)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('dismissed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='catalog.organisation')),
                        ('origin_match', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='matching.match')),
                        ('protected_image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='dismissed_pairs', to='catalog.protectedimage')),
                    ],
                    options={
                        'db_table': 'portal_dismissedpair',
                        'ordering': ['-created'],
                    },
                ),
                migrations.CreateModel(
                    name='ReviewEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('action', models.CharField(choices=[('confirmed', 'Confirmed infringement'), ('dismissed', 'Dismissed'), ('licensed', 'Marked licensed'), ('reopened', 'Reopened'), ('auto_dismissed', 'Auto-dismissed (pair dismissed before)'), ('auto_licensed', 'Auto-resolved (licensed source)'), ('exported', 'Evidence exported')], max_length=32)),
                        ('from_status', models.CharField(blank=True, max_length=16)),
                        ('to_status', models.CharField(blank=True, max_length=16)),
                        ('note', models.TextField(blank=True)),
                        ('created', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('match', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='review_events', to='matching.match')),
                        ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='catalog.organisation')),
                    ],
                    options={
                        'db_table': 'portal_reviewevent',
                        'ordering': ['created', 'id'],
                    },
                ),
                migrations.CreateModel(
                    name='Webhook',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('url', models.URLField(max_length=500)),
                        ('description', models.CharField(blank=True, max_length=200)),
                        ('secret', models.CharField(default=matching.models.new_webhook_secret, max_length=100)),
                        ('active', models.BooleanField(default=True)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='webhooks', to='catalog.organisation')),
                    ],
                    options={
                        'db_table': 'portal_webhook',
                        'ordering': ['created', 'id'],
                    },
                ),
                migrations.CreateModel(
                    name='Licence',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('holder', models.CharField(max_length=200)),
                        ('source', models.CharField(blank=True, max_length=500)),
                        ('note', models.TextField(blank=True)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('revoked', models.DateTimeField(blank=True, null=True)),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='catalog.organisation')),
                        ('origin_match', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='matching.match')),
                        ('protected_image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='licences', to='catalog.protectedimage')),
                    ],
                    options={
                        'db_table': 'portal_licence',
                        'ordering': ['-created'],
                        'indexes': [models.Index(fields=['protected_image', 'revoked'], name='licence_image_active')],
                    },
                ),
                migrations.CreateModel(
                    name='WebhookDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('uuid', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('event', models.CharField(max_length=64)),
                        ('event_key', models.CharField(max_length=128)),
                        ('payload', models.JSONField()),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('delivered', 'Delivered'), ('failed', 'Failed')], db_index=True, default='pending', max_length=16)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('response_excerpt', models.TextField(blank=True)),
                        ('error', models.TextField(blank=True)),
                        ('next_retry', models.DateTimeField(blank=True, db_index=True, null=True)),
                        ('last_attempt', models.DateTimeField(blank=True, null=True)),
                        ('delivered', models.DateTimeField(blank=True, null=True)),
                        ('created', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('webhook', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='matching.webhook')),
                    ],
                    options={
                        'verbose_name_plural': 'webhook deliveries',
                        'db_table': 'portal_webhookdelivery',
                        'ordering': ['-created', '-id'],
                        'constraints': [models.UniqueConstraint(fields=('webhook', 'event_key'), name='uniq_webhook_event')],
                    },
                ),
            ],
        ),
    ]
