"""Settings come from the environment: embedded default with nothing set, safe production defaults."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], "
    "'init': s.DATABASES['default'].get('OPTIONS', {}).get('init_command', ''), "
    "'broker': s.CELERY_BROKER_URL, 'opts': s.CELERY_BROKER_TRANSPORT_OPTIONS, "
    "'artifacts': s.MODELHUB_ARTIFACT_BACKEND, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS}))"
)
CLEARED = ("DATABASE_URL", "PGHOST", "PGDATABASE", "CELERY_BROKER_URL", "MODELHUB_S3_BUCKET", "DEBUG", "SECRET_KEY")


def run_settings(tmp_path, **overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(MODELHUB_HOME=str(tmp_path), DJANGO_SETTINGS_MODULE="modelhub.settings", **overrides)
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_embedded_default_needs_no_server(tmp_path):
    result = run_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert conf["engine"] == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in conf["init"]
    assert conf["broker"] == "filesystem://"
    assert os.path.isabs(conf["opts"]["control_folder"])
    assert conf["opts"]["data_folder_in"] == conf["opts"]["data_folder_out"]
    assert conf["artifacts"] == "filesystem"
    assert conf["debug"] is False
    assert "*" not in conf["hosts"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_full_stack_is_chosen_by_environment(tmp_path):
    result = run_settings(
        tmp_path,
        DATABASE_URL="postgres://u:p@db.example:5432/mh",
        CELERY_BROKER_URL="redis://cache.example:6379/0",
        MODELHUB_S3_BUCKET="models",
    )
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert conf["engine"] == "django.db.backends.postgresql"
    assert conf["broker"].startswith("redis://")
    assert conf["artifacts"] == "s3"


def test_insecure_secret_key_is_refused_unless_debug(tmp_path):
    refused = run_settings(tmp_path, SECRET_KEY="django-insecure-short")
    assert refused.returncode != 0
    assert "SECRET_KEY is insecure" in refused.stderr
    accepted = run_settings(tmp_path, SECRET_KEY="django-insecure-short", DEBUG="1")
    assert accepted.returncode == 0, accepted.stderr
