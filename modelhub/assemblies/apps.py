from django.apps import AppConfig


class AssembliesConfig(AppConfig):
    name = "modelhub.assemblies"
    label = "assemblies"
    verbose_name = "Assemblies"
