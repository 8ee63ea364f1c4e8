"""Safe defaults: CSP without unsafe-inline, HTTPS settings, secret keys, compose, the 413 clients see."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO_ROOT

INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+=\"|\sstyle=\"", re.IGNORECASE)


def test_no_template_has_inline_script_handlers_or_styles():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0).strip()}"
        for path in (REPO_ROOT / "templates").rglob("*.html")
        for match in INLINE.finditer(path.read_text())
    ]
    assert offenders == []


@pytest.mark.django_db
def test_every_response_has_a_strict_csp_and_referrer_policy(client, api_client_for):
    for response in (client.get("/login/"), api_client_for("ana").get("/api/heads/"), client.get("/admin/login/")):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response["Referrer-Policy"] == "same-origin"
    docs = client.get("/api/docs/")["Content-Security-Policy"]  # Swagger UI styles itself inline
    assert "script-src 'self';" in docs + ";" and "unsafe-eval" not in docs


@pytest.mark.django_db(transaction=True)
def test_pages_run_in_chromium_without_csp_violations(logged_in_page, live_server):
    page = logged_in_page("dana")
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    for path in ("/", "/heads/", "/heads/import/", "/jobs/", "/backbones/", "/api/docs/", "/admin/"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        violations = [f"{path}: {text}" if not text.startswith("/") else text for text in violations]
    assert violations == []
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info")  # the split view's script ran (the suite's action timeout)


def _manage(args, **env):
    dropped = ("DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE")  # test-only settings
    environment = {key: value for key, value in os.environ.items() if key not in dropped}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_modelhub_https(tmp_path):
    strong = "k" + "".join(chr(65 + (i * 7) % 26) + chr(97 + (i * 11) % 26) + str(i % 10) for i in range(30))
    clean = _manage(["check", "--deploy"], MODELHUB_HTTPS="1", SECRET_KEY=strong, MODELHUB_HOME=str(tmp_path))
    assert clean.returncode == 0, clean.stderr + clean.stdout
    assert "(security." not in clean.stderr + clean.stdout, clean.stderr + clean.stdout
    plain = _manage(["check", "--deploy"], SECRET_KEY=strong, MODELHUB_HOME=str(tmp_path))
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):  # HSTS, SSL, cookies
        assert warning in plain.stderr + plain.stdout


def test_the_env_example_placeholder_secret_is_refused(tmp_path):
    result = _manage(
        ["check"],
        SECRET_KEY="change-me-to-a-long-random-string-of-at-least-fifty-characters",
        MODELHUB_HOME=str(tmp_path),
    )
    assert result.returncode != 0 and "placeholder" in result.stderr


def test_compose_refuses_to_start_without_credentials_and_publishes_only_the_proxy(tmp_path):
    compose = REPO_ROOT / "docker-compose.yml"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MINIO_"))}
    missing = subprocess.run(
        ["docker-compose", "-f", str(compose), "config", "-q"], env=base_env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "Set POSTGRES_PASSWORD in .env" in missing.stderr
    env = {**base_env, "POSTGRES_PASSWORD": "pw", "MINIO_ROOT_USER": "u", "MINIO_ROOT_PASSWORD": "secret-pw"}
    ok = subprocess.run(
        ["docker-compose", "-f", str(compose), "config", "-q"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}
    assert "9001" not in compose.read_text()
    assert services["web"]["environment"]["MODELHUB_HTTPS"] == "1"
    nginx = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    assert "client_max_body_size    2g" in nginx and "proxy_request_buffering on" in nginx
    example = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert example["POSTGRES_PASSWORD"] == example["MINIO_ROOT_PASSWORD"] == example["SECRET_KEY"] == ""


@pytest.mark.django_db(transaction=True)
def test_oversized_body_sent_whole_first_gets_the_json_413(live_server, settings, make_member):
    import requests

    settings.MODELHUB_MAX_UPLOAD_BYTES = 1024 * 1024
    _, token = make_member("big")
    response = requests.post(
        f"{live_server.url}/api/uploads/",
        headers={"Authorization": f"Token {token}"},
        files={"file": ("big.keras", b"\0" * (3 * 1024 * 1024))},
        data={"team": "vision"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
