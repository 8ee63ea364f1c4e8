from django.apps import AppConfig


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    label = "artifacts"
    verbose_name = "Artifact store"

    def ready(self) -> None:
        from artifacts import signals  # noqa: F401
