"""`manage.py create_user USERNAME --team TEAM --role ROLE [--password P] [--print-token]`.

Idempotent for the user and the membership. --print-token creates a NEW API token each run
(keys are stored hashed, so an earlier one cannot be printed again) and prints it last.
"""

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from teams.models import Membership
from teams.services import token_for_user, user_create_in_team


class Command(BaseCommand):
    help = (
        "Create a user in a team with a role (creating the team if missing). Idempotent: "
        "re-running updates the role (and password, if given; a new password revokes the user's "
        "API tokens). With --print-token a new API token (named 'create_user', never expiring) is "
        "the last line printed; earlier tokens keep working until revoked."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--team", required=True, help="team slug, e.g. vision")
        parser.add_argument("--role", default=Membership.Role.MEMBER, choices=Membership.Role.values)
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")
        parser.add_argument("--print-token", action="store_true")

    def handle(self, *args, **options):
        try:
            user, created = user_create_in_team(
                username=options["username"],
                team_slug=options["team"],
                role=options["role"],
                password=options["password"],
                email=options["email"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user '{user.username}' in team '{options['team']}' as {options['role']}.")
        if options["print_token"]:
            self.stdout.write(token_for_user(user=user, name="create_user"))
