from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "modelhub.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard shell"
