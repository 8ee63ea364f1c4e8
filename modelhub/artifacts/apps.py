from django.apps import AppConfig


class ArtifactsConfig(AppConfig):
    name = "modelhub.artifacts"
    label = "artifacts"
    verbose_name = "Artifact store"

    def ready(self) -> None:
        from modelhub.artifacts import signals  # noqa: F401
