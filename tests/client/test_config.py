"""Where the client finds its server and token: arguments, MODELHUB_URL/MODELHUB_TOKEN, the login file."""

import os
import stat

import pytest
from modelhub_client.config import config_path, load_config, parse_flat_toml, resolve_settings, save_config


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("MODELHUB_URL", raising=False)
    monkeypatch.delenv("MODELHUB_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_file_lives_under_xdg_config_home_or_home(home, monkeypatch):
    assert config_path() == home / ".config" / "modelhub" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    assert config_path() == home / "xdg" / "modelhub" / "config.toml"


def test_saved_settings_are_private_and_read_back(home):
    path = save_config({"url": "https://hub.example", "token": 'mh_"quoted"\\key', "username": "Ana Ñ"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    expected = {"url": "https://hub.example", "token": 'mh_"quoted"\\key', "username": "Ana Ñ"}
    assert load_config() == expected
    assert parse_flat_toml(path.read_text()) == expected  # the Python 3.10 reader agrees with tomllib
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary file left


def test_arguments_then_environment_then_file(home, monkeypatch):
    save_config({"url": "https://hub.example/", "token": "mh_file"})
    settings = resolve_settings()
    assert (settings.url, settings.token) == ("https://hub.example", "mh_file")
    assert settings.token_source.endswith("config.toml")

    monkeypatch.setenv("MODELHUB_TOKEN", "mh_env")
    assert resolve_settings().token == "mh_env"
    assert resolve_settings(token="mh_arg").token == "mh_arg"
    assert resolve_settings(url="https://hub.example/api/").url == "https://hub.example"


def test_the_files_token_is_never_sent_to_another_server(home, monkeypatch):
    save_config({"url": "https://hub.example", "token": "mh_file"})
    monkeypatch.setenv("MODELHUB_URL", "https://elsewhere.example")
    settings = resolve_settings()
    assert (settings.url, settings.token) == ("https://elsewhere.example", None)
    assert resolve_settings(url="https://hub.example").token == "mh_file"


def test_a_url_without_a_scheme_is_refused(home):
    with pytest.raises(ValueError, match="https://"):
        resolve_settings(url="hub.example")
