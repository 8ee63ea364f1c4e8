"""`manage.py probe_worker`: queue a probe task and wait until a worker records its answer."""

import sys
import time

from django.core.management.base import BaseCommand

from core.models import WorkerProbe
from core.services import probe_enqueue


class Command(BaseCommand):
    help = "Round-trip a task through the broker to a worker that writes to the database."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30)

    def handle(self, *args, **options):
        probe = probe_enqueue()
        deadline = time.monotonic() + options["timeout"]
        while time.monotonic() < deadline:
            probe.refresh_from_db()
            if probe.status == WorkerProbe.Status.ANSWERED:
                self.stdout.write(f"Worker {probe.worker} answered probe {probe.pk}.")
                return
            time.sleep(0.2)
        self.stderr.write(f"No worker answered probe {probe.pk} within {options['timeout']}s.")
        sys.exit(1)
