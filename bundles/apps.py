"""Deployment bundles: what TF Serving (and Triton, for verified ONNX exports) load, kept in step with ModelHub."""

from django.apps import AppConfig


class BundlesConfig(AppConfig):
    name = "bundles"
    label = "bundles"
    verbose_name = "ModelHub deployment bundles (TF Serving, Triton)"

    def ready(self) -> None:
        from bundles import services
        from core.events import event_emitted

        event_emitted.connect(services.bundle_rewrite_on_event, dispatch_uid="bundles.rewrite")
        from django.db.models.signals import post_save

        from assemblies.models import Assembly

        post_save.connect(services.bundle_rewrite_on_resolution, sender=Assembly, dispatch_uid="bundles.resolved")
