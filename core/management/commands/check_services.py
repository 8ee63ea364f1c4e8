"""`manage.py check_services`: fail fast, with a clear message, when a dependency is down."""

import sys
import time

from django.core.management.base import BaseCommand

from core.services import health_report

HINTS = {
    "database": "Check DATABASE_URL / PG* and that PostgreSQL is running and reachable.",
    "broker": "Check CELERY_BROKER_URL and that Redis is running and reachable.",
    "storage": "Check MODELHUB_S3_* (endpoint, bucket, keys) or that MODELHUB_HOME is writable.",
    "worker": "Start a worker: celery -A modelhub worker -Q default,training,assembly.",
}


class Command(BaseCommand):
    help = "Check the database, broker and artifact storage; exit 1 with a clear message if one is down."

    def add_arguments(self, parser):
        parser.add_argument("--wait", type=float, default=0, help="retry for up to this many seconds")
        parser.add_argument("--worker", action="store_true", help="also require a live worker")

    def handle(self, *args, **options):
        deadline = time.monotonic() + options["wait"]
        while True:
            report = health_report(worker_timeout=1.0)
            names = ["database", "broker", "storage"] + (["worker"] if options["worker"] else [])
            failed = [name for name in names if not report[name]["ok"]]
            if not failed or time.monotonic() >= deadline:
                break
            time.sleep(1)
        for name in names:
            check = report[name]
            mark = "ok  " if check["ok"] else "FAIL"
            self.stdout.write(f"{mark} {name}: {check.get('detail') or check.get('error')}")
        if failed:
            for name in failed:
                self.stderr.write(f"ModelHub cannot start: {name} is unavailable. {HINTS[name]}")
            sys.exit(1)
