from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "modelhub.core"
    label = "core"
    verbose_name = "ModelHub core"
