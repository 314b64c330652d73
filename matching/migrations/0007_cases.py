# Cases: matches grouped by the source their suspects came from (matching/cases.py, docs/cases.md).
# Existing matches join cases with `manage.py cases_backfill`, not here (docs/cases.md, "Backfill").

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0004_apikey_revoked_reason'),
        ('matching', '0006_suspects'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Case',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('site', 'Website'), ('scan', 'Scanned source')], max_length=8)),
                ('source', models.CharField(help_text="The normalised host, or the scan's source prefix.", max_length=1024)),
                ('status', models.CharField(choices=[('open', 'Open'), ('notice_sent', 'Notice sent'), ('licensed', 'Licensed'), ('resolved', 'Resolved')], db_index=True, default='open', max_length=16)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('updated', models.DateTimeField(auto_now=True)),
                ('last_match', models.DateTimeField(blank=True, help_text='When a match last joined the case.', null=True)),
                ('assignee', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='cases', to='catalog.organisation')),
            ],
            options={
                'ordering': ['-last_match', '-id'],
            },
        ),
        migrations.AddField(
            model_name='match',
            name='case',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='matches', to='matching.case'),
        ),
        migrations.CreateModel(
            name='CaseEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('action', models.CharField(choices=[('opened', 'Case opened'), ('matches_added', 'Matches added'), ('status', 'Status changed'), ('reopened', 'Reopened by a new match'), ('assigned', 'Assignee changed'), ('note', 'Note'), ('exported', 'Evidence package exported')], max_length=32)),
                ('from_status', models.CharField(blank=True, max_length=16)),
                ('to_status', models.CharField(blank=True, max_length=16)),
                ('note', models.TextField(blank=True)),
                ('created', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('case', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='events', to='matching.case')),
                ('organisation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='catalog.organisation')),
            ],
            options={
                'ordering': ['created', 'id'],
            },
        ),
        migrations.AddIndex(
            model_name='case',
            index=models.Index(fields=['organisation', 'status', '-last_match'], name='case_org_status'),
        ),
        migrations.AddConstraint(
            model_name='case',
            constraint=models.UniqueConstraint(fields=('organisation', 'kind', 'source'), name='uniq_case_source'),
        ),
    ]
