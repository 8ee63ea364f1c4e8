from django.apps import AppConfig


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    label = "artifacts"
    verbose_name = "Artifact store"

    def ready(self) -> None:
        from artifacts import signals  # noqa: F401
        from artifacts.stores import get_blob_store
        from core.services import health_storage_check_register

        health_storage_check_register(lambda: get_blob_store().check())
