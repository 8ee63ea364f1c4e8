"""`manage.py gc_artifacts`: remove blobs that no row references."""

from datetime import timedelta

from django.core.management.base import BaseCommand

from artifacts.services import artifacts_gc, minimum_gc_grace


class Command(BaseCommand):
    help = (
        "Delete blob rows nothing references, then stored blobs that have no row. Only items "
        "unused for longer than --grace-seconds are touched (storing the same bytes again counts as a "
        "use), so uploads in flight are safe; each deletion re-checks under the lock uploads take. The "
        "grace is never shorter than the task time limit plus the reaper margin (work in flight stores "
        "blobs first)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--grace-seconds", type=int, default=3600)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **options):
        minimum = minimum_gc_grace().total_seconds()
        if options["grace_seconds"] < minimum:
            self.stdout.write(
                f"--grace-seconds {options['grace_seconds']} is shorter than the longest task may run; "
                f"using {int(minimum)} s (MODELHUB_TASK_TIME_LIMIT + MODELHUB_REAPER_MARGIN)."
            )
        report = artifacts_gc(grace=timedelta(seconds=options["grace_seconds"]), dry_run=options["dry_run"])
        prefix = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(f"{prefix} {report.rows_deleted} unreferenced rows and {report.blobs_deleted} orphan blobs.")
