"""Where the client finds its server and token: arguments, then the environment, then a file.

``modelhub login URL`` writes ``$XDG_CONFIG_HOME/modelhub/config.toml`` (by default
``~/.config/modelhub/config.toml``) with mode 0600, because it holds a token. ``MODELHUB_URL``
and ``MODELHUB_TOKEN`` override it. The file's token is only ever sent to the file's URL: with
MODELHUB_URL naming another server, a token must come from MODELHUB_TOKEN or an argument.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

URL_VARIABLE = "MODELHUB_URL"
TOKEN_VARIABLE = "MODELHUB_TOKEN"
CONFIG_FILE_NAME = "config.toml"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
KEYS = ("url", "token", "username", "expires_at")


@dataclass(frozen=True)
class Settings:
    """The URL and token to use, and where each came from ("argument", "environment", a file path)."""

    url: str | None
    token: str | None
    url_source: str = ""
    token_source: str = ""


def config_path() -> Path:
    """Return the config file's path: under XDG_CONFIG_HOME if set, else under ~/.config."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "modelhub" / CONFIG_FILE_NAME


def normalize_url(url: str) -> str:
    """Return the server's base URL without a trailing slash or a trailing /api."""
    url = url.strip().rstrip("/")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    if "://" not in url:
        raise ValueError(
            f"{url!r} is not a URL: give the server's address with its scheme, e.g. https://modelhub.example."
        )
    return url


def parse_flat_toml(text: str) -> dict:
    """Read flat ``key = "string"`` lines, the only TOML this module writes (for Python 3.10)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            values[key.strip()] = json.loads(value.strip())
        except ValueError:
            raise ValueError(f"cannot read the line {line!r}") from None
    return values


def _parse_toml(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return parse_flat_toml(text)
    return tomllib.loads(text)


def load_config(path: Path | None = None) -> dict:
    """Return the saved settings ({} when there is no file)."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        values = _parse_toml(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}). Delete it and run `modelhub login URL` again.") from None
    return {key: str(values[key]) for key in KEYS if values.get(key) is not None}


def save_config(values: dict, path: Path | None = None) -> Path:
    """Write the settings to the config file with mode 0600 (replacing it whole); return its path."""
    path = path or config_path()
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    lines = ["# Written by `modelhub login`. It holds an API token: keep it private (mode 0600)."]
    # JSON strings of ASCII text are valid TOML basic strings.
    lines += [f"{key} = {json.dumps(str(values[key]))}" for key in KEYS if values.get(key) is not None]
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    os.chmod(path, FILE_MODE)
    return path


def resolve_settings(url: str | None = None, token: str | None = None) -> Settings:
    """Return the URL and token to use: arguments first, then MODELHUB_URL/MODELHUB_TOKEN, then the file."""
    url_source = token_source = ""
    if url:
        url_source = "argument"
    elif os.environ.get(URL_VARIABLE):
        url, url_source = os.environ[URL_VARIABLE], URL_VARIABLE
    if token:
        token_source = "argument"
    elif os.environ.get(TOKEN_VARIABLE):
        token, token_source = os.environ[TOKEN_VARIABLE], TOKEN_VARIABLE
    if url:
        url = normalize_url(url)
    if not url or not token:
        path = config_path()
        saved = load_config(path)
        saved_url = normalize_url(saved["url"]) if saved.get("url") else None
        if not url and saved_url:
            url, url_source = saved_url, str(path)
        if not token and saved.get("token") and saved_url and saved_url == url:
            token, token_source = saved["token"], str(path)
    return Settings(url=url, token=token, url_source=url_source, token_source=token_source)
