"""Read ModelHub's settings from the environment: typed values with clear errors, and the blocks
(database, cache, rate limits, proxies) that several variables make together.

modelhub/settings.py reads every setting through these functions; a wrong value stops the start
with ImproperlyConfigured naming the variable, what it got and what it expects.
"""

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    """Return the environment variable `name`, or `default` when unset or empty."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def env_bool(name: str, default: bool = False) -> bool:
    """Return an environment flag; accepts 1/0, true/false, yes/no, on/off."""
    raw = env_str(name)
    if raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}.")


def env_int(name: str, default: int) -> int:
    """Return an integer environment variable, or `default` when unset."""
    raw = env_str(name)
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None


def env_float(name: str, default: float) -> float:
    """Return a number environment variable, or `default` when unset."""
    raw = env_str(name)
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated environment variable as a list."""
    raw = env_str(name)
    return [item.strip() for item in raw.split(",") if item.strip()] if raw else default


def database_from_env(*, home: Path) -> dict:
    """PostgreSQL from DATABASE_URL or PG* variables; SQLite (WAL) under MODELHUB_HOME else."""
    url = env_str("DATABASE_URL")
    if url:
        import dj_database_url

        config = dj_database_url.parse(url, conn_max_age=60)
    elif env_str("PGHOST") or env_str("PGDATABASE"):
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env_str("PGDATABASE", "modelhub"),
            "USER": env_str("PGUSER", "postgres"),
            "PASSWORD": env_str("PGPASSWORD"),
            "HOST": env_str("PGHOST", "127.0.0.1"),
            "PORT": env_str("PGPORT", "5432"),
            "CONN_MAX_AGE": 60,
        }
    else:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": home / "db.sqlite3",
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    config.setdefault("OPTIONS", {})["connect_timeout"] = env_int("MODELHUB_DB_CONNECT_TIMEOUT", 5)
    config["CONN_HEALTH_CHECKS"] = True
    return config


def caches_from_env(*, broker_url: str, home: Path) -> dict:
    """Django's cache, shared by every web process (it holds the failed-login counters).

    Redis on the broker's server with the next db number when the broker is Redis; else files
    under MODELHUB_HOME (the embedded default runs several gunicorn workers: no per-process cache).
    """
    if broker_url.startswith(("redis://", "rediss://")):
        parts = urlsplit(broker_url)
        try:
            broker_db = int(parts.path.strip("/") or 0)
        except ValueError:
            raise ImproperlyConfigured(
                f"CELERY_BROKER_URL must end in a Redis db number (e.g. redis://host:6379/0), got {parts.path!r}."
            ) from None
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": urlunsplit(parts._replace(path=f"/{(broker_db + 1) % 16}")),
                "KEY_PREFIX": "modelhub",
                "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
            }
        }
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(home / "cache" / "django"),
            "OPTIONS": {"MAX_ENTRIES": 10000},
        }
    }


def trusted_proxies() -> list[str]:
    """Return MODELHUB_TRUSTED_PROXIES, each checked to be an IP address or network."""
    proxies = env_list("MODELHUB_TRUSTED_PROXIES", [])
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"MODELHUB_TRUSTED_PROXIES must list IP addresses or networks (e.g. 172.16.0.0/12), got {proxy!r}."
            ) from None
    return proxies


THROTTLE_RATE_PATTERN = r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$"


def throttle_rate(scope: str, default: str) -> str | None:
    """Return MODELHUB_THROTTLE_<SCOPE> (checked), ``default`` when unset, None for "0" or "off"."""
    name = f"MODELHUB_THROTTLE_{scope.upper()}"
    raw = env_str(name, default).strip().lower().replace(" ", "")
    if raw in {"0", "off", "none"} or raw.startswith("0/"):
        return None
    if not re.match(THROTTLE_RATE_PATTERN, raw):
        raise ImproperlyConfigured(
            f"{name} must be a rate such as '30/min' (requests per s, min, hour or day), or 0 / off for no "
            f"limit; got {raw!r}."
        )
    return raw
