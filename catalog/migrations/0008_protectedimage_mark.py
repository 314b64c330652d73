import catalog.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0007_deletion_receipts'),
    ]

    operations = [
        migrations.AddField(
            model_name='protectedimage',
            name='mark',
            field=models.FileField(blank=True, max_length=300, upload_to=catalog.models.mark_upload_to),
        ),
        migrations.AddField(
            model_name='protectedimage',
            name='mark_info',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='protectedimage',
            name='mark_embeddings',
            field=models.BinaryField(blank=True, editable=False, null=True),
        ),
    ]
