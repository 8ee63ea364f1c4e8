"""A database made and populated by earlier code migrates with today's code without losing a row.

tests/migration_fixture/before_app_move.sqlite3 was made by the code before the apps moved from
modelhub/ to the top level (commit cb14e9f): every model of every app, two rows each, dumped to
before_app_move.json. Today's `manage.py migrate` runs on a copy in a fresh MODELHUB_HOME (the
embedded default), and every row and field that was there must still be there, equal.
"""

import json
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "migration_fixture"
APP_LABELS = ["core", "teams", "artifacts", "backbones", "heads", "training", "releases", "assemblies"]


def _manage(home, *args) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "DATABASE_URL", "CELERY_"))}
    env.update(MODELHUB_HOME=str(home), DJANGO_SETTINGS_MODULE="modelhub.settings")
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_database_of_the_earlier_layout_migrates_without_loss(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(FIXTURE / "before_app_move.sqlite3", home / "db.sqlite3")
    before = json.loads((FIXTURE / "before_app_move.json").read_text())

    _manage(home, "migrate", "--no-input")
    assert "[ ]" not in _manage(home, "showmigrations", *APP_LABELS)
    after = json.loads(_manage(home, "dumpdata", *APP_LABELS, "auth.user"))

    now = {(row["model"], row["pk"]): row["fields"] for row in after}
    assert len(before) >= 2 * 26, "the fixture holds every model"
    for row in before:
        fields = now.get((row["model"], row["pk"]))
        assert fields is not None, f"{row['model']} {row['pk']} was lost"
        changed = {
            name: (value, fields.get(name)) for name, value in row["fields"].items() if fields.get(name) != value
        }
        assert not changed, f"{row['model']} {row['pk']}: {changed}"
