"""Forget the cached blob store when tests change the artifact settings."""

from django.core.signals import setting_changed
from django.dispatch import receiver

from artifacts.stores import get_blob_store


@receiver(setting_changed)
def reset_blob_store(*, setting: str, **kwargs) -> None:
    if setting.startswith("MODELHUB_ARTIFACT") or setting == "MODELHUB_S3":
        get_blob_store.cache_clear()
