from django.apps import AppConfig


class AssembliesConfig(AppConfig):
    name = "assemblies"
    label = "assemblies"
    verbose_name = "Assemblies"
