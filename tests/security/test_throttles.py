"""Per-user throttles on the expensive operations (issue 20, item 5): 429 + Retry-After + the envelope
after each scope's limit; polling, lists and details are never throttled; another user is not
affected; the window ends; the schema lists the 429s."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from core import throttling

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"
MISSING = 987_654_321

# (scope, method, path, body, format): requests that reach the throttle; most are refused later
# (404, 400), which still counts, as the work they ask for would.
CASES = [
    ("compare", "get", f"/api/heads/compare/?a={MISSING}&b={MISSING + 1}", None, None),
    ("predict", "post", f"/api/assemblies/{MISSING}/predict/", {"task": "x", "inputs": [[0.0]]}, "json"),
    ("evaluate", "post", f"/api/heads/{MISSING}/evaluate/", {"dataset": MISSING}, "json"),
    ("imports", "post", "/api/imports/", {"team": "vision"}, "json"),
    ("uploads", "post", "/api/uploads/", {"team": "vision"}, "multipart"),
    ("uploads", "post", "/api/heads/", {"backbone": MISSING, "task": "t"}, "multipart"),
    ("uploads", "post", "/api/backbones/", {"team": "vision", "name": "b"}, "multipart"),
    ("uploads", "post", "/api/datasets/", {"team": "vision", "name": "d"}, "multipart"),
    ("webhook_test", "post", f"/api/webhooks/{MISSING}/test/", None, None),
    ("tokens", "post", "/api/tokens/", {"name": "loop"}, "json"),
    ("jobs", "post", "/api/jobs/", {"team": "vision", "kind": "train_head"}, "json"),
    ("jobs", "post", f"/api/jobs/{MISSING}/retry/", None, None),
    ("assemblies", "post", "/api/assemblies/", {"team": "vision"}, "json"),
]


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


def limit_to(settings, **rates):
    settings.MODELHUB_THROTTLE_RATES = {**settings.MODELHUB_THROTTLE_RATES, **rates}


def send(client, method, path, body, format):
    if method == "get":
        return client.get(path)
    return client.post(path, body, format=format) if body is not None else client.post(path)


def assert_throttled(response, scope: str, limit: int) -> None:
    assert response.status_code == 429, (response.status_code, response.content[:300])
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert (
        f"MODELHUB_THROTTLE_{scope.upper()}" in error["message"] and f"at most {limit} per minute" in error["message"]
    )
    assert error["detail"] == {"scope": scope, "limit": limit, "period_seconds": 60, "retry_after": retry_after}


@pytest.mark.parametrize(("scope", "method", "path", "body", "format"), CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_each_scope_answers_429_with_retry_after_after_its_limit(
    settings, api_client_for, scope, method, path, body, format
):
    limit_to(settings, **{scope: "2/min"})
    ana = api_client_for("ana", role="admin")
    for _ in range(2):
        assert send(ana, method, path, body, format).status_code != 429
    assert_throttled(send(ana, method, path, body, format), scope, 2)
    # Per user: another member of the same team is not affected.
    assert send(api_client_for("ben", role="admin"), method, path, body, format).status_code != 429


def test_the_password_exchange_counts_a_users_successful_exchanges(settings, make_member):
    limit_to(settings, tokens="2/min")
    make_member("ana", password=PASSWORD)
    make_member("ben", password=PASSWORD)
    for _ in range(2):
        assert APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD}).status_code == 200
    assert_throttled(APIClient().post("/api/auth/token/", {"username": "ana", "password": PASSWORD}), "tokens", 2)
    assert APIClient().post("/api/auth/token/", {"username": "ben", "password": PASSWORD}).status_code == 200
    # Wrong passwords are the login throttle's business (code too_many_attempts), not counted here.
    wrong = APIClient().post("/api/auth/token/", {"username": "ben", "password": "nope"})
    assert wrong.status_code == 401


def test_the_window_ends_and_the_next_request_goes_through(settings, api_client_for, monkeypatch):
    limit_to(settings, compare="1/min")
    start = 1_000_000 * 60 + 10.0
    monkeypatch.setattr(throttling, "now", lambda: start)
    ana = api_client_for("ana")
    path = f"/api/heads/compare/?a={MISSING}&b={MISSING + 1}"
    assert ana.get(path).status_code == 404
    refused = ana.get(path)
    assert refused.status_code == 429 and refused["Retry-After"] == "50"
    monkeypatch.setattr(throttling, "now", lambda: start + 50)
    assert ana.get(path).status_code == 404


def test_polling_lists_and_details_are_never_throttled(settings, api_client_for):
    limit_to(settings, **{scope: "1/min" for scope in settings.MODELHUB_THROTTLE_RATES})
    ana = api_client_for("ana")
    polled = [
        "/api/heads/",
        f"/api/heads/{MISSING}/",
        "/api/imports/",
        f"/api/imports/{MISSING}/",
        "/api/uploads/",
        f"/api/uploads/{MISSING}/",
        "/api/backbones/",
        "/api/datasets/",
        f"/api/datasets/{MISSING}/",
        "/api/jobs/",
        f"/api/jobs/{MISSING}/",
        "/api/assemblies/",
        f"/api/assemblies/{MISSING}/",
        f"/api/assemblies/{MISSING}/predictions/{MISSING}/",
        "/api/tokens/",
        "/api/teams/",
        f"/api/webhooks/{MISSING}/deliveries/",
        "/api/health/",
    ]
    for _ in range(5):
        for path in polled:
            response = ana.get(path)
            assert response.status_code in (200, 404, 503), (path, response.status_code)


def test_session_clients_are_throttled_too(settings, client, make_member):
    limit_to(settings, compare="1/min")
    user, _ = make_member("dana")
    client.force_login(user)
    path = f"/api/heads/compare/?a={MISSING}&b={MISSING + 1}"
    assert client.get(path).status_code == 404
    assert client.get(path).status_code == 429


def test_a_cache_that_is_down_lets_requests_through(settings, api_client_for, monkeypatch):
    limit_to(settings, compare="1/min")

    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(throttling.cache, "add", broken)
    ana = api_client_for("ana")
    for _ in range(3):
        assert ana.get(f"/api/heads/compare/?a={MISSING}&b={MISSING + 1}").status_code == 404


def test_a_bad_rate_in_the_environment_is_refused_at_startup(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from modelhub.settings_env import throttle_rate

    monkeypatch.setenv("MODELHUB_THROTTLE_COMPARE", "thirty a minute")
    with pytest.raises(ImproperlyConfigured, match="MODELHUB_THROTTLE_COMPARE must be a rate such as '30/min'"):
        throttle_rate("compare", "30/min")
    monkeypatch.setenv("MODELHUB_THROTTLE_COMPARE", "off")
    assert throttle_rate("compare", "30/min") is None
    monkeypatch.setenv("MODELHUB_THROTTLE_COMPARE", "100/hour")
    assert throttle_rate("compare", "30/min") == "100/hour"
    monkeypatch.delenv("MODELHUB_THROTTLE_COMPARE")
    assert throttle_rate("compare", "30/min") == "30/min"


def test_the_defaults_stop_a_loop_of_compares(settings):
    limit, period = throttling.parse_rate(settings.THROTTLE_DEFAULT_RATES["compare"])
    assert limit <= 30 and period == 60


def test_the_schema_lists_429_with_retry_after_exactly_where_a_throttle_counts(client):
    schema = client.get("/api/schema/?format=json").json()
    throttled = {
        ("get", "/api/heads/compare/"),
        ("post", "/api/assemblies/{id}/predict/"),
        ("post", "/api/heads/{id}/evaluate/"),
        ("post", "/api/imports/"),
        ("post", "/api/uploads/"),
        ("post", "/api/heads/"),
        ("post", "/api/backbones/"),
        ("post", "/api/datasets/"),
        ("post", "/api/webhooks/{id}/test/"),
        ("post", "/api/tokens/"),
        ("post", "/api/auth/token/"),
        ("post", "/api/jobs/"),
        ("post", "/api/jobs/{id}/retry/"),
        ("post", "/api/assemblies/"),
        ("post", "/api/assemblies/{id}/exports/"),
        # The inference protocols count against the predict scope and answer in their own error shape.
        ("post", "/v1/models/{name}:predict"),
        ("post", "/v1/models/{name}/versions/{version}:predict"),
        ("post", "/v1/models/{name}/labels/{label}:predict"),
        ("post", "/v2/models/{name}/infer"),
        ("post", "/v2/models/{name}/versions/{version}/infer"),
    }
    found = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            response = operation["responses"].get("429")
            if response is None:
                continue
            found.add((method, path))
            assert "Retry-After" in response.get("headers", {}), (method, path)
            body = "/ProtocolError" if path.startswith(("/v1/", "/v2/")) else "/Error"
            assert response["content"]["application/json"]["schema"]["$ref"].endswith(body), (method, path)
    assert found == throttled
