"""The ``modelhub`` command line: a thin layer over ``Client`` that prints tables or the API's JSON.

The commands are rows of one table (cli_commands.COMMANDS); this module builds the argparse parser
from it and runs the row a command line names.

Exit status: 0 when the command did what it was asked, 1 when the server refused it or the
work it waited for failed (an import, assembly or job that failed, a rejected upload), 2 for a
command line that does not parse, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from modelhub_client import __version__
from modelhub_client.cli_commands import COMMANDS
from modelhub_client.cli_output import print_json
from modelhub_client.cli_rows import Arg, Command, OneOf, UsageError
from modelhub_client.client import Client
from modelhub_client.errors import ModelHubError

__all__ = ["Client", "UsageError", "build_parser", "main"]

logger = logging.getLogger("modelhub_client")

DESCRIPTION = """\
ModelHub from scripts and CI: import full models, review heads, assemble them into one
SavedModel, download it, and train heads.

The server and token come from --url/--token, else MODELHUB_URL and MODELHUB_TOKEN, else
what `modelhub login URL` saved in $XDG_CONFIG_HOME/modelhub/config.toml (~/.config/...).
"""

EPILOG = """\
examples:
  modelhub login https://modelhub.example
  modelhub import ./models --team vision --backbone-name mobilenet --wait
  modelhub heads list --team vision --status draft
  modelhub heads submit 12 13 14
  modelhub heads approve 12 --comment "holdout accuracy looks good"   (as another user: four eyes)
  modelhub assemble --team vision --backbone 3 --wait --download model.zip
  modelhub jobs train-head --team vision --backbone 3 --dataset 2 --task sentiment --follow

--json prints objects exactly as the API returns them (a JSON array for lists), after waiting
when --wait is given; errors then print the API's error body {"error": {...}} on stdout too.
Exit status: 0 done; 1 refused by the server, or the import, assembly, job or upload failed;
2 bad command line.
Every command has its own --help.
"""


# --- Parser -----------------------------------------------------------------------------------


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's line breaks; show defaults where a help text names one."""


def add_output(parser: argparse.ArgumentParser, *, wait: str | None = None) -> None:
    """Add --json, and --wait/--timeout when the command can wait for a worker."""
    parser.add_argument("--json", action="store_true", help="print the object as the API returns it (JSON)")
    if wait:
        parser.add_argument("--wait", action="store_true", help=wait)
        parser.add_argument(
            "--timeout", type=float, metavar="SECONDS", help="give up waiting after SECONDS (exit 1); default: no limit"
        )


def subparser(group, name: str, summary: str, description: str = "", **kwargs) -> argparse.ArgumentParser:
    return group.add_parser(name, help=summary, description=description or summary, formatter_class=Formatter, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser from the command table (cli_commands.COMMANDS), in its order."""
    parser = argparse.ArgumentParser(prog="modelhub", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"modelhub-client {__version__}")
    parser.add_argument("--url", metavar="URL", help="server base URL (default: MODELHUB_URL, then the saved login)")
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="API token (default: MODELHUB_TOKEN, then the saved login); prefer the variable, "
        "since a command line is visible to other users of the machine",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-file messages on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True
    groups = {(): commands}
    for row in COMMANDS:
        if isinstance(row, Command):
            command = subparser(groups[row.path[:-1]], row.path[-1], row.summary, row.description)
            add_arguments(command, row)
            command.set_defaults(row=row)
        else:
            group = subparser(commands, row.name, row.summary, row.description)
            groups[(row.name,)] = group.add_subparsers(dest=f"{row.name}_command", metavar="COMMAND", required=True)
    return parser


def add_arguments(parser: argparse.ArgumentParser, row: Command) -> None:
    """Add a row's arguments, then --json (and --wait, --timeout) unless it runs on its own (login)."""
    for argument in row.arguments:
        if isinstance(argument, OneOf):
            exclusive = parser.add_mutually_exclusive_group()
            for choice in argument.arguments:
                exclusive.add_argument(*choice.flags, **choice.options)
        else:
            assert isinstance(argument, Arg)
            parser.add_argument(*argument.flags, **argument.options)
    if row.local is None:
        add_output(parser, wait=row.wait)


def log_to_stderr(*, quiet: bool) -> logging.Handler:
    """Send the client's per-file messages to stderr as plain lines (none with --quiet)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    json_output = getattr(args, "json", False)
    handler = log_to_stderr(quiet=args.quiet)
    try:
        row: Command = args.row
        if row.local is not None:
            return row.local(args, Client)
        with Client(args.url, args.token, progress=False if args.quiet else None) as client:
            return row.run(args, client)
    except ModelHubError as exc:
        if json_output:
            print_json(exc.envelope())
        print(f"modelhub: error: {exc}", file=sys.stderr)
        return 1
    except (UsageError, ValueError) as exc:
        print(f"modelhub: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modelhub: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
