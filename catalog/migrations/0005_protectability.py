from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0004_apikey_revoked_reason'),
    ]

    operations = [
        migrations.AddField(
            model_name='protectedimage',
            name='protection_flags',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='protectedimage',
            name='keypoint_count',
            field=models.PositiveIntegerField(blank=True, help_text='Local features found at indexing (ORB keypoints).', null=True),
        ),
    ]
