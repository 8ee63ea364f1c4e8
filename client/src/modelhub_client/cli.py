"""The ``modelhub`` command line: a thin layer over ``Client`` that prints tables or the API's JSON.

Exit status: 0 when the command did what it was asked, 1 when the server refused it or the
work it waited for failed (an import, assembly or job that failed, a rejected upload), 2 for a
command line that does not parse, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from modelhub_client import __version__
from modelhub_client.client import Client
from modelhub_client.config import config_path, load_config, normalize_url, save_config
from modelhub_client.errors import ModelHubError
from modelhub_client.models import ApiObject, Assembly, Backbone, Head, Job, ModelImport, TrackedObject

logger = logging.getLogger("modelhub_client")
HEAD_STATUSES = ["validating", "rejected", "draft", "in_review", "changes_requested", "approved", "archived"]
BACKBONE_STATUSES = ["validating", "ready", "rejected", "deduplicated"]
JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
JOB_KINDS = ["train_head", "train_heads", "fine_tune", "grow_backbone"]

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


class UsageError(Exception):
    """A command line that parses but cannot work (exit status 2)."""


# --- Output ---------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """Print a server object (or a list of them) as the API returned it."""
    if isinstance(value, ApiObject):
        value = value.raw
    elif isinstance(value, list):
        value = [item.raw if isinstance(item, ApiObject) else item for item in value]
    print(json.dumps(value, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    """Print rows under headers in aligned columns, or ``empty`` when there are none."""
    if not rows:
        print(empty)
        return
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def human_bytes(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def outcome(obj: TrackedObject) -> int:
    """Return the exit status for an object the command waited for (1 when it failed)."""
    if obj.failed:
        print(f"modelhub: {obj.label} {obj.status}: {obj.error or 'no reason given'}", file=sys.stderr)
        return 1
    return 0


def head_rows(heads: Sequence[Head]) -> list[list[Any]]:
    return [
        [
            head.id,
            head.team,
            head.task,
            f"v{head.version}",
            f"{head.backbone_name} v{head.backbone_version} (#{head.backbone})",
            head.status,
            head.output_width,
            head.created_by,
            (head.review or {}).get("reviewed_by"),
        ]
        for head in heads
    ]


HEAD_HEADERS = ["ID", "TEAM", "TASK", "VERSION", "BACKBONE", "STATUS", "WIDTH", "AUTHOR", "REVIEWER"]


def show_head(head: Head) -> None:
    print_table(HEAD_HEADERS, head_rows([head]), empty="")
    if head.error:
        print(f"error: {head.error}")


def show_backbone(backbone: Backbone) -> None:
    print_table(BACKBONE_HEADERS, backbone_rows([backbone]), empty="")
    if backbone.duplicate_of:
        print(f"same weights as backbone {backbone.duplicate_of}")
    if backbone.error:
        print(f"error: {backbone.error}")


BACKBONE_HEADERS = ["ID", "TEAM", "NAME", "VERSION", "STATUS", "FEATURE LAYER", "SIZE", "CREATED"]


def backbone_rows(backbones: Sequence[Backbone]) -> list[list[Any]]:
    return [
        [
            b.id,
            b.team,
            b.name,
            f"v{b.version}",
            b.status,
            b.feature_layer or "(output)",
            human_bytes(b.size_bytes),
            (b.created_at or "")[:19],
        ]
        for b in backbones
    ]


def _branch_text(branch: dict | None) -> str:
    if not branch:
        return ""
    return f"after {branch['after_layer']}: {len(branch['layers'])} layers, {branch['params']:,} params"


def show_import(model_import: ModelImport) -> None:
    if not model_import.done:
        print(
            f"import {model_import.id} is {model_import.status}. "
            f"Wait for it with: modelhub imports show {model_import.id} --wait"
        )
        return
    rows = [
        [
            entry.get("filename"),
            entry.get("task"),
            entry.get("head_version") or "",
            "ok" if entry.get("ok") else entry.get("error", "not registered"),
            _branch_text(entry.get("branch")),
        ]
        for entry in model_import.report or []
    ]
    print_table(["FILE", "TASK", "HEAD", "RESULT", "BRANCH"], rows, empty="(no per-file report)")
    if model_import.failed:
        return
    layer = model_import.feature_layer or (model_import.summary or {}).get("feature_layer") or ""
    print(
        f"import {model_import.id} {model_import.status}: backbone {model_import.backbone_name} "
        f"(#{model_import.backbone}), feature layer '{layer}', {len(model_import.head_ids)} draft heads "
        f"({', '.join(str(i) for i in model_import.head_ids)})."
    )
    if model_import.head_ids:
        print(f"Next: modelhub heads submit {' '.join(str(i) for i in model_import.head_ids)}")


def show_assembly(assembly: Assembly) -> None:
    if not assembly.done:
        print(
            f"assembly {assembly.id} is {assembly.status}. "
            f"Wait for it with: modelhub assemblies show {assembly.id} --wait"
        )
        return
    if assembly.failed:
        return
    reused = " (existing)" if assembly.existing else ""
    print(
        f"assembly {assembly.id}{reused} {assembly.status}: backbone #{assembly.backbone}, "
        f"{len(assembly.tasks or [])} tasks, {human_bytes(assembly.size_bytes)}, sha256 {assembly.sha256}"
    )
    rows = [
        [t.get("task_id"), t.get("task"), t.get("head_version"), f"v{t.get('version')}", t.get("output_width")]
        for t in assembly.tasks or []
    ]
    print_table(["TASK_ID", "TASK", "HEAD", "VERSION", "WIDTH"], rows, empty="")


def progress_text(job: Job) -> str:
    progress = job.progress or {}
    if job.done or not progress.get("epochs"):
        return ""
    return f"epoch {min(progress.get('epoch', 0) + 1, progress['epochs'])}/{progress['epochs']}"


def job_rows(jobs: Sequence[Job]) -> list[list[Any]]:
    return [[j.id, j.team, j.kind, j.status, progress_text(j), j.created_by, (j.created_at or "")[:19]] for j in jobs]


JOB_HEADERS = ["ID", "TEAM", "KIND", "STATUS", "PROGRESS", "AUTHOR", "CREATED"]


def show_job(job: Job, *, log_lines: int = 10) -> None:
    print_table(JOB_HEADERS, job_rows([job]), empty="")
    if job.metrics:
        last = job.metrics[-1]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if isinstance(v, float))
        print(f"last epoch: {shown}")
    if job.result:
        print(f"result: {json.dumps(job.result)}")
    if job.error:
        print(f"error: {job.error}")
    lines = [line for line in (job.log or "").splitlines() if line.strip()][-log_lines:] if log_lines > 0 else []
    if lines:
        print("log (last lines):")
        for line in lines:
            print(f"  {line}")


def emit(args: argparse.Namespace, value: Any, human: Callable[[Any], None]) -> None:
    """Print the API's JSON with --json, else the human form."""
    if args.json:
        print_json(value)
    else:
        human(value)


# --- Argument types ---------------------------------------------------------------------------


def id_list(text: str) -> list[int]:
    """Parse "4,5,9" into ids."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids separated by commas, e.g. 4,5,9; got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("expected at least one id, e.g. 4,5,9")
    return ids


def int_list(text: str) -> list[int]:
    """Parse "64,32" into layer sizes."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, e.g. 64,32; got {text!r}"
        ) from None


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# --- Commands ---------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    url = normalize_url(args.server)
    username = args.username or input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {username} at {url}: ")
    if not username or not password:
        raise UsageError("A username and a password are needed.")
    with Client(url, token=None, progress=False) as anonymous:
        exchanged = anonymous.exchange_password(username, password)
    with Client(url, token=exchanged["token"], progress=False) as client:
        teams = client.teams()
    path = save_config(
        {"url": url, "token": exchanged["token"], "username": username, "expires_at": exchanged.get("expires_at")}
    )
    expiry = f", expires {exchanged['expires_at'][:10]}" if exchanged.get("expires_at") else ""
    print(f"Logged in to {url} as {username}. Token saved in {path} (mode 0600{expiry}).")
    print("Teams: " + (", ".join(f"{team.slug} ({team.role})" for team in teams) or "none yet: ask an admin"))
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    path = config_path()
    saved = load_config(path)
    if not saved.get("token"):
        print(f"No saved token in {path}.")
        return 0
    try:
        with Client(saved["url"], saved["token"], progress=False) as client:
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


def cmd_teams(args: argparse.Namespace, client: Client) -> int:
    teams = client.teams()
    rows = [[team.slug, team.name, team.role] for team in teams]
    emit(args, teams, lambda _: print_table(["TEAM", "NAME", "ROLE"], rows, empty="No teams."))
    return 0


def cmd_import(args: argparse.Namespace, client: Client) -> int:
    model_import = client.import_models(
        args.directory,
        team=args.team,
        backbone_name=args.backbone_name,
        feature_layer=args.feature_layer,
        branches=args.branches,
        min_shared_fraction=args.min_shared_fraction,
        tasks=args.tasks,
        wait=args.wait,
        timeout=args.timeout,
    )
    emit(args, model_import, show_import)
    return outcome(model_import)


def cmd_imports_show(args: argparse.Namespace, client: Client) -> int:
    model_import = client.model_import(args.id)
    if args.wait:
        model_import = client.wait(model_import, timeout=args.timeout)
    emit(args, model_import, show_import)
    return outcome(model_import)


def cmd_heads_list(args: argparse.Namespace, client: Client) -> int:
    heads = client.heads(team=args.team, task=args.task, status=args.status, backbone=args.backbone)
    emit(args, heads, lambda hs: print_table(HEAD_HEADERS, head_rows(hs), empty="No heads match."))
    return 0


def cmd_heads_show(args: argparse.Namespace, client: Client) -> int:
    head = client.head(args.id)
    if args.wait:
        head = client.wait(head, timeout=args.timeout)
    emit(args, head, show_head)
    return outcome(head)


def cmd_heads_upload(args: argparse.Namespace, client: Client) -> int:
    head = client.upload_head(
        args.file,
        backbone=args.backbone,
        task=args.task,
        labels=args.labels,
        description=args.description,
        wait=args.wait,
        timeout=args.timeout,
    )
    emit(args, head, show_head)
    return outcome(head)


def cmd_heads_transition(args: argparse.Namespace, client: Client) -> int:
    action = {"submit": client.submit, "approve": client.approve, "request-changes": client.request_changes}
    heads = [action[args.heads_command](head_id, args.comment or "") for head_id in args.ids]
    emit(args, heads[0] if len(heads) == 1 else heads, lambda _: print_table(HEAD_HEADERS, head_rows(heads), empty=""))
    return 0


def cmd_assemble(args: argparse.Namespace, client: Client) -> int:
    assembly = client.assemble(
        team=args.team,
        backbone=args.backbone,
        heads=args.heads,
        alias=args.alias,
        name=args.name,
        wait=args.wait or bool(args.download),
        timeout=args.timeout,
    )
    return finish_assembly(args, client, assembly)


def finish_assembly(args: argparse.Namespace, client: Client, assembly: Assembly) -> int:
    if args.download and not assembly.failed:
        client.download(assembly, args.download)
    emit(args, assembly, show_assembly)
    if args.download and not assembly.failed and not args.json:
        print(f"Downloaded to {args.download} (sha256 verified).")
    return outcome(assembly)


def cmd_assemblies_list(args: argparse.Namespace, client: Client) -> int:
    assemblies = client.assemblies()
    rows = [
        [a.id, a.team, a.name, a.backbone, a.status, len(a.tasks or []), human_bytes(a.size_bytes)] for a in assemblies
    ]
    emit(
        args,
        assemblies,
        lambda _: print_table(
            ["ID", "TEAM", "NAME", "BACKBONE", "STATUS", "TASKS", "SIZE"], rows, empty="No assemblies."
        ),
    )
    return 0


def cmd_assemblies_show(args: argparse.Namespace, client: Client) -> int:
    assembly = client.assembly(args.id)
    if args.wait or args.download:
        assembly = client.wait(assembly, timeout=args.timeout)
    return finish_assembly(args, client, assembly)


def cmd_backbones_list(args: argparse.Namespace, client: Client) -> int:
    backbones = client.backbones(team=args.team, name=args.name, status=args.status)
    emit(args, backbones, lambda bs: print_table(BACKBONE_HEADERS, backbone_rows(bs), empty="No backbones match."))
    return 0


def cmd_backbones_show(args: argparse.Namespace, client: Client) -> int:
    backbone = client.backbone(args.id)
    if args.wait:
        backbone = client.wait(backbone, timeout=args.timeout)
    emit(args, backbone, show_backbone)
    return outcome(backbone)


def cmd_backbones_upload(args: argparse.Namespace, client: Client) -> int:
    backbone = client.upload_backbone(
        args.file,
        team=args.team,
        name=args.name,
        feature_layer=args.feature_layer,
        description=args.description,
        wait=args.wait,
        timeout=args.timeout,
    )
    emit(args, backbone, show_backbone)
    return outcome(backbone)


def cmd_jobs_train_head(args: argparse.Namespace, client: Client) -> int:
    head: dict[str, Any] = {"type": args.head}
    for key in ("hidden", "dropout", "units", "activation"):
        if getattr(args, key) is not None:
            head[key] = getattr(args, key)
    job = client.train_head(
        team=args.team,
        backbone=args.backbone,
        dataset=args.dataset,
        task=args.task,
        head=head,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        early_stopping_patience=args.early_stopping_patience,
    )
    return finish_job(args, client, job)


def finish_job(args: argparse.Namespace, client: Client, job: Job) -> int:
    if args.follow:
        log_stream = sys.stderr if args.json else sys.stdout
        for line in client.follow(job, timeout=args.timeout):
            print(line, file=log_stream, flush=True)
        job = client.job(job)
    elif args.wait:
        job = client.wait(job, timeout=args.timeout)
    emit(args, job, lambda j: show_job(j, log_lines=0 if args.follow else 10))
    return outcome(job) if job.done else 0


def cmd_jobs_show(args: argparse.Namespace, client: Client) -> int:
    return finish_job(args, client, client.job(args.id))


def cmd_jobs_list(args: argparse.Namespace, client: Client) -> int:
    jobs = client.jobs(team=args.team, kind=args.kind, status=args.status)
    emit(args, jobs, lambda js: print_table(JOB_HEADERS, job_rows(js), empty="No jobs match."))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel_job(args.id)
    emit(args, job, show_job)
    return 0


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

    # login / logout / teams
    login = subparser(
        commands,
        "login",
        "exchange a username and password for an API token and save it",
        "Exchange a username and password for a new API token (POST /api/auth/token/) and save the\n"
        "server URL and token in $XDG_CONFIG_HOME/modelhub/config.toml (default ~/.config/...), mode\n"
        "0600. Later commands use them unless MODELHUB_URL / MODELHUB_TOKEN say otherwise. The token\n"
        "expires after the server's MODELHUB_EXCHANGED_TOKEN_DAYS; log in again then.",
    )
    login.add_argument("server", metavar="URL", help="the server's base URL, e.g. https://modelhub.example")
    login.add_argument("--username", help="your user name (default: asked)")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin (for scripts)"
    )
    login.set_defaults(handler=cmd_login, needs_client=False)
    logout = subparser(commands, "logout", "revoke the saved token on the server and remove it from the config file")
    logout.set_defaults(handler=cmd_logout, needs_client=False)
    teams = subparser(commands, "teams", "list your teams and your role in each")
    add_output(teams)
    teams.set_defaults(handler=cmd_teams)

    # import / imports show
    importing = subparser(
        commands,
        "import",
        "import a folder of full models as one backbone version plus one draft head per file",
        "Import the .keras full models in DIR (fine-tuned copies of one backbone, each with its own\n"
        "head) as one backbone version plus one draft head per file, all or nothing. Each file is\n"
        "uploaded first (skipped when the team has its bytes already), then a worker splits them.\n"
        "Task slugs come from the file names (Topic Model.keras -> topic-model) unless --tasks says.",
    )
    importing.add_argument("directory", metavar="DIR", help="folder of .keras files (sorted by name)")
    importing.add_argument("--team", required=True, metavar="TEAM", help="team slug")
    importing.add_argument("--backbone-name", required=True, metavar="NAME", help="name of the shared backbone")
    importing.add_argument(
        "--feature-layer",
        metavar="LAYER",
        help="last layer of the shared backbone (default: the deepest layer the models share; required "
        "for a single file)",
    )
    importing.add_argument(
        "--branches",
        action="store_true",
        help="models that fine-tuned the backbone's top keep those layers as a branch (else any difference fails)",
    )
    importing.add_argument(
        "--min-shared-fraction",
        type=float,
        default=None,
        help="with --branches: the least share of the backbone's parameters every model must share (default 0.5)",
    )
    importing.add_argument("--tasks", type=name_list, help="task slugs, one per file in name order: a,b,c")
    add_output(importing, wait="wait for the worker and print the per-file report (exit 1 if it failed)")
    importing.set_defaults(handler=cmd_import)

    imports = subparser(commands, "imports", "show an import and its per-file report")
    imports_commands = imports.add_subparsers(dest="imports_command", metavar="COMMAND", required=True)
    imports_show = subparser(imports_commands, "show", "show an import (and wait for it)")
    imports_show.add_argument("id", type=int, help="import id")
    add_output(imports_show, wait="wait until the worker is done")
    imports_show.set_defaults(handler=cmd_imports_show)

    # heads
    heads = subparser(
        commands,
        "heads",
        "list, show, upload and review heads",
        "Heads and their review. Statuses: validating -> draft -> in_review -> approved |\n"
        "changes_requested (-> in_review again); rejected when validation fails; archived.\n"
        "Approving or requesting changes needs a reviewer or admin who did not author the head.",
    )
    heads_commands = heads.add_subparsers(dest="heads_command", metavar="COMMAND", required=True)
    heads_list = subparser(heads_commands, "list", "list head versions of your teams")
    heads_list.add_argument("--team", help="team slug")
    heads_list.add_argument("--task", help="task slug")
    heads_list.add_argument("--status", choices=HEAD_STATUSES, help="review status")
    heads_list.add_argument("--backbone", type=int, metavar="ID", help="backbone version id")
    add_output(heads_list)
    heads_list.set_defaults(handler=cmd_heads_list)
    heads_show = subparser(heads_commands, "show", "show one head version")
    heads_show.add_argument("id", type=int, help="head version id")
    add_output(heads_show, wait="wait until validation is done")
    heads_show.set_defaults(handler=cmd_heads_show)
    heads_upload = subparser(
        heads_commands,
        "upload",
        "upload a head (or a full model containing the backbone) for a task",
        "Upload a head model (its input is the backbone's features) or a full model that contains\n"
        "the backbone, as a new draft version of TASK. A worker validates it first.",
    )
    heads_upload.add_argument("file", metavar="FILE", help=".keras file")
    heads_upload.add_argument("--backbone", type=int, required=True, metavar="ID", help="backbone version id")
    heads_upload.add_argument("--task", required=True, help="task slug, e.g. sentiment")
    heads_upload.add_argument("--labels", type=name_list, help="class labels in output order: neg,pos")
    heads_upload.add_argument("--description", default="", help="free text")
    add_output(heads_upload, wait="wait for validation (exit 1 if rejected)")
    heads_upload.set_defaults(handler=cmd_heads_upload)
    for name, summary, comment_help in [
        ("submit", "ask for review: draft or changes_requested -> in_review", "a note for the reviewer"),
        ("approve", "approve heads in review (reviewers and admins, not the author)", "a review comment"),
        ("request-changes", "send heads in review back to their author", "what to change (required)"),
    ]:
        transition = subparser(heads_commands, name, summary)
        transition.add_argument("ids", metavar="ID", type=int, nargs="+", help="head version id(s)")
        transition.add_argument("--comment", required=name == "request-changes", help=comment_help)
        add_output(transition)
        transition.set_defaults(handler=cmd_heads_transition)

    # assemble / assemblies
    assemble = subparser(
        commands,
        "assemble",
        "assemble heads on a backbone into one SavedModel (and download it)",
        "Assemble heads on a backbone into one SavedModel f(inputs, task_id). Without --heads or\n"
        "--alias: every approved head on the backbone. The same backbone and heads give back the\n"
        "existing assembly. Statuses: queued -> building -> verifying -> ready | failed.",
    )
    assemble.add_argument("--team", required=True, metavar="TEAM", help="team slug")
    assemble.add_argument("--backbone", type=int, required=True, metavar="ID", help="backbone version id")
    which = assemble.add_mutually_exclusive_group()
    which.add_argument("--heads", type=id_list, metavar="ID,ID", help="head version ids: 4,5,9")
    which.add_argument(
        "--alias", metavar="NAME", help="the heads a release alias names (needs a server with release aliases)"
    )
    assemble.add_argument("--name", default="", help="a name for the assembly (the download's file name)")
    assemble.add_argument("--download", metavar="FILE", help="wait, then stream the zip to FILE and verify its sha256")
    add_output(assemble, wait="wait until it is ready or failed (exit 1 if it failed)")
    assemble.set_defaults(handler=cmd_assemble)

    assemblies = subparser(commands, "assemblies", "list, show or download assemblies")
    assemblies_commands = assemblies.add_subparsers(dest="assemblies_command", metavar="COMMAND", required=True)
    assemblies_list = subparser(assemblies_commands, "list", "list the assemblies of your teams")
    add_output(assemblies_list)
    assemblies_list.set_defaults(handler=cmd_assemblies_list)
    assemblies_show = subparser(assemblies_commands, "show", "show an assembly: its tasks, checksum, verification")
    assemblies_show.add_argument("id", type=int, help="assembly id")
    assemblies_show.add_argument(
        "--download", metavar="FILE", help="wait, then stream the zip to FILE and verify its sha256"
    )
    add_output(assemblies_show, wait="wait until it is ready or failed")
    assemblies_show.set_defaults(handler=cmd_assemblies_show)

    # backbones
    backbones = subparser(commands, "backbones", "list, show or upload backbone versions")
    backbones_commands = backbones.add_subparsers(dest="backbones_command", metavar="COMMAND", required=True)
    backbones_list = subparser(backbones_commands, "list", "list backbone versions of your teams")
    backbones_list.add_argument("--team", help="team slug")
    backbones_list.add_argument("--name", help="backbone name")
    backbones_list.add_argument("--status", choices=BACKBONE_STATUSES, help="status")
    add_output(backbones_list)
    backbones_list.set_defaults(handler=cmd_backbones_list)
    backbones_show = subparser(backbones_commands, "show", "show one backbone version")
    backbones_show.add_argument("id", type=int, help="backbone version id")
    add_output(backbones_show, wait="wait until validation is done")
    backbones_show.set_defaults(handler=cmd_backbones_show)
    backbones_upload = subparser(
        backbones_commands,
        "upload",
        "upload a backbone .keras file as a new version of NAME",
        "Upload a backbone .keras file as a new version of NAME (a worker validates it: validating\n"
        "-> ready | rejected | deduplicated). The same bytes again give back the existing version.",
    )
    backbones_upload.add_argument("file", metavar="FILE", help=".keras file")
    backbones_upload.add_argument("--team", required=True, metavar="TEAM", help="team slug")
    backbones_upload.add_argument("--name", required=True, help="backbone name")
    backbones_upload.add_argument(
        "--feature-layer",
        default="",
        metavar="LAYER",
        help="the layer whose output heads read (default: the model's output)",
    )
    backbones_upload.add_argument("--description", default="", help="free text")
    add_output(backbones_upload, wait="wait for validation (exit 1 if rejected)")
    backbones_upload.set_defaults(handler=cmd_backbones_upload)

    # jobs
    jobs = subparser(commands, "jobs", "train heads; list, show, follow and cancel jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    train = subparser(
        jobs_commands,
        "train-head",
        "train a new head on a backbone's frozen features",
        "Train a new head for TASK on the backbone's frozen features (computed once per dataset and\n"
        "cached). The new head version is a draft to review. Options left out take the server's\n"
        "defaults; the server names any bad value.",
    )
    train.add_argument("--team", required=True, metavar="TEAM", help="team slug")
    train.add_argument("--backbone", type=int, required=True, metavar="ID", help="backbone version id (ready)")
    train.add_argument(
        "--dataset", type=int, required=True, metavar="ID", help="dataset id (ready, fitting the backbone)"
    )
    train.add_argument("--task", required=True, help="task slug of the new head")
    train.add_argument("--head", choices=["dense", "mlp"], default="dense", help="head type (default: dense)")
    train.add_argument("--hidden", type=int_list, metavar="N,N", help="hidden layer sizes of an mlp head: 64,32")
    train.add_argument("--dropout", type=float, help="dropout after each hidden layer of an mlp head, in [0, 1)")
    train.add_argument("--units", type=int, help="output width (default: the dataset's number of classes)")
    train.add_argument("--activation", choices=["softmax", "sigmoid", "linear"], help="output activation")
    train.add_argument("--epochs", type=int, help="training epochs")
    train.add_argument("--batch-size", type=int, help="batch size")
    train.add_argument("--learning-rate", type=float, help="Adam learning rate")
    train.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    train.add_argument("--early-stopping-patience", type=int, metavar="EPOCHS", help="stop early on validation loss")
    train.add_argument("--follow", action="store_true", help="print the job's log lines as it runs, until it ends")
    add_output(train, wait="wait until the job ends (exit 1 if it failed or was cancelled)")
    train.set_defaults(handler=cmd_jobs_train_head)
    jobs_list = subparser(jobs_commands, "list", "list jobs of your teams, newest first")
    jobs_list.add_argument("--team", help="team slug")
    jobs_list.add_argument("--kind", choices=JOB_KINDS, help="job kind")
    jobs_list.add_argument("--status", choices=JOB_STATUSES, help="status")
    add_output(jobs_list)
    jobs_list.set_defaults(handler=cmd_jobs_list)
    jobs_show = subparser(jobs_commands, "show", "show a job: status, progress, metrics, log")
    jobs_show.add_argument("id", type=int, help="job id")
    jobs_show.add_argument("--follow", action="store_true", help="print its log lines as it runs, until it ends")
    add_output(jobs_show, wait="wait until it ends")
    jobs_show.set_defaults(handler=cmd_jobs_show)
    jobs_cancel = subparser(jobs_commands, "cancel", "cancel a queued or running job")
    jobs_cancel.add_argument("id", type=int, help="job id")
    add_output(jobs_cancel)
    jobs_cancel.set_defaults(handler=cmd_jobs_cancel)
    return parser


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
        if not getattr(args, "needs_client", True):
            return args.handler(args)
        with Client(args.url, args.token, progress=False if args.quiet else None) as client:
            return args.handler(args, client)
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
