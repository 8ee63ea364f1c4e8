"""Blob.last_used_at: gc ages rows by their last use (a reuse refreshes it), not by their creation."""

import django.utils.timezone
from django.db import migrations, models


def copy_created_at(apps, schema_editor):
    """Existing rows were last used when they were created, as far as anyone knows."""
    Blob = apps.get_model("artifacts", "Blob")
    Blob.objects.update(last_used_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("artifacts", "0002_alter_upload_created_by"),
    ]

    operations = [
        migrations.AddField(
            model_name="blob",
            name="last_used_at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now),
        ),
        migrations.RunPython(copy_created_at, migrations.RunPython.noop),
    ]
