from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "modelhub.teams"
    label = "teams"
    verbose_name = "Teams and roles"
