from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"
    label = "teams"
    verbose_name = "Teams and roles"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_login_failed
        from django.db.models.signals import post_save, pre_save

        from teams import signals

        user_model = get_user_model()
        user_login_failed.connect(signals.count_login_failure, dispatch_uid="teams.count_login_failure")
        pre_save.connect(signals.note_password_change, sender=user_model, dispatch_uid="teams.note_password_change")
        post_save.connect(
            signals.revoke_tokens_after_password_change, sender=user_model, dispatch_uid="teams.revoke_tokens"
        )
