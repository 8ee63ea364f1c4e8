"""Isolation of the pytest-xdist workers that `make test` runs the default set on.

Loaded with ``-p tests.xdist_env`` (scripts/test.sh), so it runs before pytest-django imports the
settings. Each worker gets what no other may touch: its own Redis databases (the broker on db
2k, the cache on 2k + 1; the live app's isolated pair, tests/api/live_app.py, on 8 + 2k) and its
own MODELHUB_HOME (artifacts, feature cache, the filesystem broker). pytest-django gives each
worker its own test database. The tests that stop and restart the shared PostgreSQL and Redis
(marker ``serial``) run after the parallel phase, alone. Outside xdist this module does nothing.
"""

import os
from pathlib import Path

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
INDEX = int(WORKER[2:]) if WORKER.startswith("gw") and WORKER[2:].isdigit() else 0

if WORKER:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith("redis://"):
        base, _, db = broker.rpartition("/")
        os.environ["CELERY_BROKER_URL"] = f"{base}/{int(db or 0) + 2 * INDEX}"
        os.environ["MODELHUB_TEST_REDIS_URL"] = os.environ["CELERY_BROKER_URL"]
    home = os.environ.get("MODELHUB_HOME")
    if home:
        worker_home = Path(home) / WORKER
        worker_home.mkdir(parents=True, exist_ok=True)
        os.environ["MODELHUB_HOME"] = str(worker_home)
