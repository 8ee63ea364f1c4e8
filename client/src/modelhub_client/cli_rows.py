"""What one row of the command table is (cli_commands.COMMANDS) and how a row runs.

A ``Command`` names the ``Client`` call it makes (``Call``), what happens before printing
(``then``: wait, download, follow) and how its result is printed (``show``), so that one generic
``Command.run`` serves every command that talks to the server.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelhub_client.cli_output import outcome, print_json

if TYPE_CHECKING:
    from modelhub_client.client import Client


class Arg:
    """One ``add_argument`` call: its flags (or positional name) and options, exactly as argparse takes them."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


@dataclass(frozen=True)
class OneOf:
    """Arguments of which at most one may be given (argparse's mutually exclusive group)."""

    arguments: tuple[Arg, ...]


@dataclass(frozen=True)
class Call:
    """The client method a command calls: ``client.<method>(args.<positional>..., <keyword>=args.<keyword>...)``."""

    method: str
    positional: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()

    def __call__(self, client: Client, args: argparse.Namespace) -> Any:
        method = getattr(client, self.method)
        return method(
            *(getattr(args, name) for name in self.positional), **{k: getattr(args, k) for k in self.keywords}
        )


def wait_if_asked(args: argparse.Namespace, client: Client, value: Any) -> Any:
    """With --wait, poll the object until the worker is done with it."""
    if getattr(args, "wait", False):
        return client.wait(value, timeout=args.timeout)
    return value


@dataclass(frozen=True)
class Group:
    """A command whose subcommands are the rows below it, e.g. ``heads`` for ``heads list``."""

    name: str
    summary: str
    description: str = ""


@dataclass(frozen=True)
class Command:
    """One command: how it parses, which client call it makes and how its result is printed.

    ``call(client, args)`` returns the result; ``then(args, client, result)`` may wait for it,
    download it or follow it; ``show(result, args)`` prints it for people (``--json`` prints the
    API's JSON instead). ``wait`` is the help of ``--wait``: a command that has it exits 1 when its
    result failed. ``local(args, connect)`` replaces all of that for the commands that make their
    own connections (login, logout); ``connect`` builds a ``Client``.
    """

    path: tuple[str, ...]
    summary: str
    description: str = ""
    arguments: tuple[Arg | OneOf, ...] = ()
    call: Callable[[Client, argparse.Namespace], Any] | None = None
    then: Callable[[argparse.Namespace, Client, Any], Any] = wait_if_asked
    show: Callable[[Any, argparse.Namespace], None] | None = None
    wait: str | None = None
    local: Callable[[argparse.Namespace, Callable[..., Client]], int] | None = None

    def run(self, args: argparse.Namespace, client: Client) -> int:
        """Make the client call, print its result; return the exit status."""
        assert self.call is not None and self.show is not None, self.path
        value = self.then(args, client, self.call(client, args))
        if args.json:
            print_json(value)
        else:
            self.show(value, args)
        return outcome(value) if self.wait else 0


class UsageError(Exception):
    """A command line that parses but cannot work (exit status 2)."""
