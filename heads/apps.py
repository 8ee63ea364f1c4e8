from django.apps import AppConfig


class HeadsConfig(AppConfig):
    name = "heads"
    label = "heads"
    verbose_name = "Heads and review"
