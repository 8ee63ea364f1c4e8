from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "releases"
    label = "releases"
    verbose_name = "ModelHub releases (aliases and webhooks)"

    def ready(self) -> None:
        from core.events import change_checked, event_emitted
        from releases import services

        event_emitted.connect(services.webhook_deliveries_queue, dispatch_uid="releases.webhooks")
        change_checked.connect(services.alias_guard_change, dispatch_uid="releases.alias_guard")
