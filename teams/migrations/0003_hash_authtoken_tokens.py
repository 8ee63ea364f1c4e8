"""Move the plaintext rest_framework.authtoken tokens to hashed ApiToken rows, then delete them.

rest_framework.authtoken is no longer installed, so its model is not in the migration state:
the old table is read with SQL when it exists (databases created before API tokens were
hashed) and skipped otherwise. The emptied table stays, so that the recorded authtoken
migrations still match the schema. The old keys keep working: they are looked up by hash like
new ones. Not reversible (the plaintext keys are gone).
"""

import hashlib
from datetime import UTC

from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

OLD_TABLE = "authtoken_token"
MIGRATED_NAME = "token (from before named tokens)"


def _aware(value):
    """SQLite hands raw timestamps back as naive text; PostgreSQL as aware datetimes."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is None:
        return timezone.now()
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value


def hash_old_tokens(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if OLD_TABLE not in connection.introspection.table_names(cursor):
            return
        quote = connection.ops.quote_name
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} FROM {quote(OLD_TABLE)}")
        rows = cursor.fetchall()
    ApiToken = apps.get_model("teams", "ApiToken")
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user_id=user_id,
                name=MIGRATED_NAME,
                prefix=key[:8],
                key_hash=hashlib.sha256(key.encode()).hexdigest(),
                created_at=_aware(created),
            )
            for key, user_id, created in rows
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(OLD_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [
        ("teams", "0002_api_token"),
    ]

    operations = [
        migrations.RunPython(hash_old_tokens, migrations.RunPython.noop),
    ]
