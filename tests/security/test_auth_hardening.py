"""Authentication hardening: failed logins are throttled per username and per address on all three
password paths, tokens are stored hashed, and a password change revokes sessions and tokens."""

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from teams import login_throttle
from teams.models import ApiToken
from teams.services import token_for_user, user_create_in_team

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"
PATHS = ["api", "login", "admin"]
LIMIT = 10  # settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE's default


@pytest.fixture(autouse=True)
def fast_hashes_and_fresh_counters(settings):
    """MD5 keeps the many password checks fast; every test starts (and leaves) with no counters."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock, starting one second into a window; `clock.t += 60` ends the window."""
    state = SimpleNamespace(t=60.0 * 30_000_000 + 1)
    monkeypatch.setattr(login_throttle, "now", lambda: state.t)
    return state


@pytest.fixture
def dana(make_member):
    """A staff member (so that /admin/login/ lets her in with the right password)."""
    user, _ = make_member("dana", password=PASSWORD)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def attempt(path: str, username: str, password: str, ip: str):
    """POST a username and password to one of the three password paths from address `ip`."""
    data = {"username": username, "password": password}
    if path == "api":
        return APIClient().post("/api/auth/token/", data, REMOTE_ADDR=ip)
    url = "/login/" if path == "login" else "/admin/login/"
    return Client().post(url, data, REMOTE_ADDR=ip)


def succeeded(path: str, response) -> bool:
    if path == "api":
        return response.status_code == 200 and response.json()["token"].startswith("mh_")
    return response.status_code == 302  # the forms redirect only after a successful login


def failed(path: str, response) -> bool:
    return response.status_code == (401 if path == "api" else 200)


def assert_refused(path: str, response) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    if path == "api":
        error = response.json()["error"]
        assert error["code"] == "too_many_attempts"
        assert "Try again in" in error["message"]
    else:
        assert response["Content-Type"].startswith("text/plain")
        assert "Too many failed logins" in response.content.decode()


@pytest.mark.parametrize("path", PATHS)
def test_a_username_is_blocked_after_failures_from_many_addresses(path, dana, clock):
    for number in range(LIMIT):
        assert failed(path, attempt(path, "dana", "wrong", f"10.0.0.{number}"))
    # Blocked before the password is checked: the right one from a new address is refused too.
    refused = attempt(path, "dana", PASSWORD, "10.0.1.1")
    assert_refused(path, refused)
    assert ApiToken.objects.filter(user=dana).count() == 1  # make_member's only: none was exchanged
    # Same username, other case: the same counter.
    assert_refused(path, attempt(path, "DANA", PASSWORD, "10.0.1.2"))
    # Another user from those addresses is not affected.
    User.objects.create_user("erin", password=PASSWORD, is_staff=True)
    assert succeeded(path, attempt(path, "erin", PASSWORD, "10.0.0.1"))


@pytest.mark.parametrize("path", PATHS)
def test_an_address_is_blocked_after_failures_for_many_usernames(path, dana, clock):
    for number in range(LIMIT):
        assert failed(path, attempt(path, f"nobody-{number}", "wrong", "192.0.2.7"))
    assert_refused(path, attempt(path, "dana", PASSWORD, "192.0.2.7"))
    assert succeeded(path, attempt(path, "dana", PASSWORD, "192.0.2.8"))


@pytest.mark.parametrize("path", PATHS)
def test_the_block_ends_with_the_window(path, dana, clock):
    for _ in range(LIMIT):
        attempt(path, "dana", "wrong", "192.0.2.7")
    refused = attempt(path, "dana", PASSWORD, "192.0.2.7")
    assert_refused(path, refused)
    assert int(refused["Retry-After"]) == 59  # one second into the minute
    clock.t += 58
    last_second = attempt(path, "dana", PASSWORD, "192.0.2.7")
    assert_refused(path, last_second)
    assert last_second["Retry-After"] == "1"
    clock.t += 1
    assert succeeded(path, attempt(path, "dana", PASSWORD, "192.0.2.7"))


def test_the_three_paths_share_the_counters(dana, clock):
    for number in range(LIMIT):
        attempt(PATHS[number % 3], "dana", "wrong", f"10.0.0.{number}")
    for path in PATHS:
        assert_refused(path, attempt(path, "dana", PASSWORD, "10.9.9.9"))


def test_a_successful_login_resets_no_other_address(dana, clock):
    attacker, owner = "203.0.113.66", "198.51.100.1"
    for number in range(LIMIT - 1):
        attempt("api", f"guess-{number}", "wrong", attacker)
    assert succeeded("login", attempt("login", "dana", PASSWORD, owner))
    assert failed("api", attempt("api", "guess-last", "wrong", attacker))  # the 10th failure: still counted
    assert_refused("api", attempt("api", "dana", PASSWORD, attacker))


def test_the_plain_429_never_echoes_the_input(clock):
    hostile = "<script>alert(1)</script>"
    for _ in range(LIMIT):
        attempt("login", hostile, "wrong", "192.0.2.7")
    for path in ("login", "admin"):
        response = attempt(path, hostile, "wrong", "192.0.2.7")
        assert_refused(path, response)
        assert "<script" not in response.content.decode()


def test_the_limit_comes_from_settings(settings, dana, clock):
    settings.MODELHUB_LOGIN_FAILURES_PER_MINUTE = 2
    attempt("api", "dana", "wrong", "192.0.2.7")
    attempt("api", "dana", "wrong", "192.0.2.7")
    assert_refused("api", attempt("api", "dana", PASSWORD, "192.0.2.7"))
    assert "at most 2 a minute" in attempt("api", "dana", PASSWORD, "192.0.2.7").json()["error"]["message"]


def test_the_counters_live_in_a_cache_shared_by_processes(settings):
    backend = settings.CACHES["default"]["BACKEND"]
    assert backend in (
        "django.core.cache.backends.redis.RedisCache",
        "django.core.cache.backends.filebased.FileBasedCache",
    )
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        assert backend.endswith("RedisCache")
        assert settings.CACHES["default"]["LOCATION"] != settings.CELERY_BROKER_URL  # another db number


# --- Tokens are stored hashed ------------------------------------------------------------------


def test_no_key_is_stored_in_the_database(api_client_for):
    client = api_client_for("ana")
    created = client.post("/api/tokens/", {"name": "ci"}, format="json").json()
    exchanged = APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD}).json()
    keys = [created["key"], exchanged["token"]]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    for key in keys:
        assert key.startswith("mh_") and len(key) == 46
        assert key not in stored and key[8:] not in stored
        assert ApiToken.objects.filter(key_hash=ApiToken.hash_key(key)).exists()
    assert "authtoken_token" not in connection.introspection.table_names()


def test_the_migration_hashes_old_plaintext_tokens_and_deletes_them(make_member):
    user, _ = make_member("olga")
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp with time zone NOT NULL, "
            "user_id integer NOT NULL UNIQUE)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, timezone.now(), user.pk])
    migration = importlib.import_module("teams.migrations.0003_hash_authtoken_tokens")
    migration.hash_old_tokens(django_apps, SimpleNamespace(connection=connection))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    token = ApiToken.objects.get(user=user, name=migration.MIGRATED_NAME)
    assert token.prefix == old_key[:8] and token.key_hash == ApiToken.hash_key(old_key)
    response = APIClient(HTTP_AUTHORIZATION=f"Token {old_key}").get("/api/teams/")
    assert response.status_code == 200  # the old key keeps working


# --- A password change revokes sessions and tokens ----------------------------------------------


def logged_in_client(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    assert client.get("/").status_code == 200
    return client


def assert_revoked(key: str) -> None:
    response = APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/teams/")
    assert response.status_code == 401
    assert "was revoked" in response.json()["error"]["message"]


def test_set_password_logs_out_sessions_and_revokes_tokens(make_member):
    user, key = make_member("dana", password=PASSWORD)
    session = logged_in_client("dana")
    user.set_password("new-Secret-456")
    user.save()
    response = session.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert_revoked(key)
    assert not ApiToken.objects.filter(user=user, revoked_at__isnull=True).exists()
    # A token made after the change works.
    fresh = APIClient().post("/api/auth/token/", {"username": "dana", "password": "new-Secret-456"}).json()
    assert APIClient(HTTP_AUTHORIZATION=f"Token {fresh['token']}").get("/api/teams/").status_code == 200


@pytest.mark.parametrize("usable", ["true", "false"])
def test_a_password_change_in_the_admin_logs_out_and_revokes(admin_client, make_member, usable):
    user, key = make_member("dana", password=PASSWORD)
    session = logged_in_client("dana")
    form = {"usable_password": usable, "password1": "new-Secret-456", "password2": "new-Secret-456"}
    if usable == "false":  # "Disable password-based authentication"
        form = {"usable_password": "false", "unset-password": "1"}
    response = admin_client.post(f"/admin/auth/user/{user.pk}/password/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert session.get("/").status_code == 302
    assert_revoked(key)


def test_other_user_saves_keep_tokens(make_member):
    user, key = make_member("dana", password=PASSWORD)
    user.first_name = "Dana"
    user.save()
    assert logged_in_client("dana")  # last_login is saved on login
    assert APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/teams/").status_code == 200


def test_a_hash_upgrade_on_login_is_not_a_password_change(settings, make_member):
    user, _ = make_member("dana", password=PASSWORD)
    User.objects.filter(pk=user.pk).update(password=make_password(PASSWORD, hasher="md5"))
    user.refresh_from_db()
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    key = token_for_user(user=user)
    assert APIClient().post("/api/auth/token/", {"username": "dana", "password": PASSWORD}).status_code == 200
    assert User.objects.get(pk=user.pk).password.startswith("pbkdf2_sha256$")  # Django rehashed it
    assert APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/teams/").status_code == 200


def test_create_user_with_a_new_password_revokes_but_the_same_password_does_not(make_member):
    user, key = make_member("dana", password=PASSWORD)
    user_create_in_team(username="dana", team_slug="vision", role="member", password=PASSWORD)
    assert APIClient(HTTP_AUTHORIZATION=f"Token {key}").get("/api/teams/").status_code == 200
    user_create_in_team(username="dana", team_slug="vision", role="member", password="new-Secret-456")
    assert_revoked(key)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings, dana, clock):
    settings.MODELHUB_TRUSTED_PROXIES = ["10.9.0.0/16"]

    def via_proxy(client_address: str, proxy: str = "10.9.0.2"):
        return APIClient().post(
            "/api/auth/token/",
            {"username": f"nobody-{client_address}", "password": "wrong"},
            REMOTE_ADDR=proxy,
            HTTP_X_FORWARDED_FOR=f"198.51.100.99, {client_address}",  # the left entry is the client's lie
        )

    for _ in range(LIMIT):
        via_proxy("203.0.113.5")
    assert_refused("api", attempt("api", "dana", PASSWORD, "203.0.113.5"))  # counted as the real client
    good = APIClient().post(
        "/api/auth/token/",
        {"username": "dana", "password": PASSWORD},
        REMOTE_ADDR="10.9.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.6",
    )
    assert good.status_code == 200  # the proxy itself was not blocked
    # Not from a proxy: X-Forwarded-For is ignored, the sender's address counts.
    for _ in range(LIMIT):
        via_proxy("203.0.113.7", proxy="192.0.2.50")
    assert_refused("api", attempt("api", "dana", PASSWORD, "192.0.2.50"))
    assert succeeded("api", attempt("api", "dana", PASSWORD, "203.0.113.7"))
