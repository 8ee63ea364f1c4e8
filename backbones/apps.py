from django.apps import AppConfig


class BackbonesConfig(AppConfig):
    name = "backbones"
    label = "backbones"
    verbose_name = "Backbones"
