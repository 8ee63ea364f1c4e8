"""`manage.py import_models DIR --team T --backbone-name N [--feature-layer L] [--branches]`."""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from heads.imports import import_create
from heads.work.importing import import_run
from teams.services import team_get_or_create


class Command(BaseCommand):
    help = (
        "Import every .keras full model in DIR as one backbone (deduplicated) plus one draft head "
        "per file, all or nothing, and print the per-file report. Runs in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--team", required=True)
        parser.add_argument("--backbone-name", required=True)
        parser.add_argument(
            "--feature-layer",
            default="",
            help="last layer of the shared backbone; omit it (with two or more files) to let the import "
            "pick the deepest layer the models share",
        )
        parser.add_argument(
            "--branches",
            action="store_true",
            help="let models own the top of the backbone: each keeps the layers above its branch point as a "
            "branch; without it any backbone difference fails the import",
        )
        parser.add_argument(
            "--min-shared-fraction",
            type=float,
            default=0.5,
            help="with --branches: the least share of the backbone's parameters every model must share (0..1)",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **options):
        directory = Path(options["directory"])
        paths = sorted(directory.glob("*.keras"))
        if not paths:
            raise CommandError(f"No .keras files in {directory}. Save models with model.save('name.keras').")
        try:
            team = team_get_or_create(slug=options["team"])
            model_import = import_create(
                team=team,
                user=None,
                backbone_name=options["backbone_name"],
                feature_layer=options["feature_layer"],
                files=[(p.name, p) for p in paths],
                branches=options["branches"],
                min_shared_fraction=options["min_shared_fraction"],
                queue=False,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        model_import = import_run(import_id=model_import.pk)
        if options["json"]:
            self.stdout.write(json.dumps({"status": model_import.status, "report": model_import.report}, indent=2))
        else:
            for entry in model_import.report:
                outcome = f"head v{entry['head_version']}" if entry.get("ok") else f"FAILED: {entry.get('error', '')}"
                if entry.get("ok") and entry.get("branch"):
                    branch = entry["branch"]
                    outcome += (
                        f", branches after {branch['after_layer']}: {len(branch['layers'])} layers, "
                        f"{branch['params']:,} params"
                    )
                self.stdout.write(f"{entry['filename']:40} {entry['task']:24} {outcome}")
            self.stdout.write(
                model_import.error or f"Imported {len(model_import.report)} heads on backbone {model_import.backbone}."
            )
        if model_import.status != "succeeded":
            sys.exit(1)
