"""Populate every table of a fresh embedded-default database (SQLite) with rows, for the migration test.

Run with the code whose database the test migrates. before_app_move.sqlite3 and .json were made
at commit cb14e9f (the apps still under modelhub/, before they moved beside heads/ and training/):
    MODELHUB_HOME=<empty dir> python manage.py migrate
    MODELHUB_HOME=<same dir> python tests/migration_fixture/make_fixture.py <out.json>
    cp <dir>/db.sqlite3 tests/migration_fixture/before_app_move.sqlite3
Every concrete model of ModelHub's apps gets two rows: fields with a default or null are left
alone, others get a plain value of their type, foreign keys point at rows made first. The JSON
holds `dumpdata` of those apps, which the test compares after migrating with today's code.
"""

import datetime
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import models, transaction  # noqa: E402

APP_LABELS = ["core", "teams", "artifacts", "backbones", "heads", "training", "releases", "assemblies"]
made: dict = {}


def value_for(field, index: int):
    if isinstance(field, models.ForeignKey | models.OneToOneField):
        return row(field.related_model, index)
    if field.choices:
        return field.choices[index % len(field.choices)][0]
    if isinstance(field, models.BooleanField):
        return bool(index)
    if isinstance(field, models.IntegerField | models.BigIntegerField | models.PositiveIntegerField):
        return index + 1
    if isinstance(field, models.FloatField | models.DecimalField):
        return 0.5 + index
    if isinstance(field, models.DateTimeField):
        return datetime.datetime(2026, 12, 1, 12, index, tzinfo=datetime.UTC)
    if isinstance(field, models.JSONField):
        return {"n": index}
    if isinstance(field, models.EmailField):
        return f"user{index}@example.com"
    if isinstance(field, models.SlugField):
        return f"{field.model._meta.model_name}-{index}"
    if isinstance(field, models.CharField | models.TextField):
        if field.name == "sha256":
            return f"{index:064x}"
        return f"{field.name}-{index}"[: field.max_length or 100]
    if isinstance(field, models.BinaryField):
        return b"x"
    raise TypeError(f"no value for {field!r}")


def row(model, index: int = 0):
    key = (model._meta.label, index)
    if key in made:
        return made[key]
    values = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.auto_created:
            continue
        if isinstance(field, models.ForeignKey) and field.related_model is model:
            continue  # a self link (parent, origin): left empty
        if field.has_default() or (field.null and not isinstance(field, models.ForeignKey)):
            continue
        if field.null and isinstance(field, models.ForeignKey):
            values[field.name] = row(field.related_model, index)
            continue
        values[field.name] = value_for(field, index)
    instance = model(**values)
    instance.save()
    made[key] = instance
    return instance


def main(out: str) -> None:
    with transaction.atomic():
        for label in APP_LABELS:
            for model in apps.get_app_config(label).get_models():
                if model._meta.abstract or model._meta.proxy or not model._meta.managed:
                    continue
                for index in (0, 1):
                    row(model, index)
    from io import StringIO

    buffer = StringIO()
    call_command("dumpdata", *APP_LABELS, "auth.user", indent=1, stdout=buffer)
    data = json.loads(buffer.getvalue())
    Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"{len(data)} rows of {len({item['model'] for item in data})} models")


if __name__ == "__main__":
    main(sys.argv[1])
