"""``modelhub login`` and ``modelhub logout``: the two commands that make their own connections.

Login exchanges a password for a token before any token exists; logout revokes the saved token
and removes it from the config file. Both take ``connect`` (the ``Client`` class, or what a test
puts in its place) instead of the connection every other command gets.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelhub_client.cli_rows import UsageError
from modelhub_client.config import config_path, load_config, normalize_url, save_config
from modelhub_client.errors import ModelHubError

if TYPE_CHECKING:
    from modelhub_client.client import Client


def login(args: argparse.Namespace, connect: Callable[..., Client]) -> int:
    """Exchange a username and password for a token, save it with the URL, and list the user's teams."""
    url = normalize_url(args.server)
    username = args.username or input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {username} at {url}: ")
    if not username or not password:
        raise UsageError("A username and a password are needed.")
    with connect(url, token=None, progress=False) as anonymous:
        exchanged = anonymous.exchange_password(username, password)
    with connect(url, token=exchanged["token"], progress=False) as client:
        teams = client.teams()
    path = save_config(
        {"url": url, "token": exchanged["token"], "username": username, "expires_at": exchanged.get("expires_at")}
    )
    expiry = f", expires {exchanged['expires_at'][:10]}" if exchanged.get("expires_at") else ""
    print(f"Logged in to {url} as {username}. Token saved in {path} (mode 0600{expiry}).")
    print("Teams: " + (", ".join(f"{team.slug} ({team.role})" for team in teams) or "none yet: ask an admin"))
    return 0


def logout(args: argparse.Namespace, connect: Callable[..., Client]) -> int:
    """Revoke the saved token on its server (when it can) and remove it from the config file."""
    path = config_path()
    saved = load_config(path)
    if not saved.get("token"):
        print(f"No saved token in {path}.")
        return 0
    try:
        with connect(saved["url"], saved["token"], progress=False) as client:
            revoked = client.revoke_own_token()
    except ModelHubError as exc:
        print(f"modelhub: could not revoke the token on {saved['url']}: {exc}", file=sys.stderr)
        revoked = False
    save_config({key: value for key, value in saved.items() if key not in ("token", "expires_at")}, path)
    if revoked:
        print(f"Revoked the token on {saved['url']} and removed it from {path}.")
    else:
        print(
            f"Removed the token for {saved['url']} from {path}. It could not be revoked on the server: "
            "revoke it on the dashboard's API tokens page."
        )
    return 0
