from django.apps import AppConfig


class BackbonesConfig(AppConfig):
    name = "modelhub.backbones"
    label = "backbones"
    verbose_name = "Backbones"
