"""Signal receivers: count failed logins, and revoke API tokens when a password changes.

Connected in TeamsConfig.ready(). A password change is seen on the user model itself
(pre_save compares the stored hash, post_save revokes), so every path that changes a password
is covered: the admin, ``manage.py changepassword``, ``create_user --password``, or any
``set_password(); save()``. Django's own hash upgrade on login (the same password rehashed with
more iterations) is not a change: it leaves tokens alone. Sessions need nothing here: Django
logs out other sessions itself, since the session auth hash derives from the password hash.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import get_hasher, identify_hasher, is_password_usable

from teams.login_throttle import client_ip, login_failure_record
from teams.services import api_token_revoke_all

PASSWORD_CHANGED = "_modelhub_password_changed"


def count_login_failure(sender, credentials: dict, request=None, **kwargs) -> None:
    """Count a failed authenticate() for its username and the client's address (user_login_failed)."""
    username = credentials.get(get_user_model().USERNAME_FIELD) or ""
    login_failure_record(username=str(username), ip=client_ip(request))


def _hash_is_outdated(encoded: str) -> bool:
    """Whether Django would rehash `encoded` on the next correct login (another hasher, fewer iterations)."""
    try:
        hasher = identify_hasher(encoded)
    except ValueError:
        return False
    preferred = get_hasher("default")
    return hasher.algorithm != preferred.algorithm or preferred.must_update(encoded)


def note_password_change(sender, instance, raw: bool = False, update_fields=None, **kwargs) -> None:
    """Before a user is saved, mark it when its password hash changes (pre_save)."""
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return  # e.g. last_login on every login: no extra query
    old = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    if old is None or old == instance.password:
        return
    # check_password() rehashing an outdated hash calls set_password() and then clears _password;
    # set_password() by itself leaves the raw password in _password until save().
    upgrade = (
        getattr(instance, "_password", None) is None
        and is_password_usable(instance.password)
        and _hash_is_outdated(old)
    )
    if not upgrade:
        setattr(instance, PASSWORD_CHANGED, True)


def revoke_tokens_after_password_change(sender, instance, raw: bool = False, **kwargs) -> None:
    """After a user whose password changed is saved, revoke all their API tokens (post_save)."""
    if getattr(instance, PASSWORD_CHANGED, False):
        setattr(instance, PASSWORD_CHANGED, False)
        api_token_revoke_all(user=instance)
