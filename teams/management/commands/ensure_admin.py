"""`manage.py ensure_admin`: create the first admin account if there is none (idempotent)."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from teams.services import user_create_in_team


class Command(BaseCommand):
    help = (
        "Create superuser 'admin' (admin of team 'default') when no superuser exists. The "
        "password comes from MODELHUB_ADMIN_PASSWORD, else it is generated and printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("MODELHUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user, _ = user_create_in_team(username="admin", team_slug="default", role="admin", password=password)
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
        if os.environ.get("MODELHUB_ADMIN_PASSWORD"):
            self.stdout.write("Created admin account 'admin' with the password from MODELHUB_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                f"Created admin account 'admin' with password: {password}\n"
                "It is shown only this once; change it in the dashboard's admin."
            )
