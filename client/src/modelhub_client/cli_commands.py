"""The ``modelhub`` command line as ONE table: every command, its arguments, the client call and its printer.

A row of ``COMMANDS`` is either a ``Group`` (a command with subcommands, e.g. ``heads``) or a
``Command``: its path (``("heads", "list")``), help texts, arguments, the ``Client`` method it
calls, what happens before printing (wait, download, follow) and how its result is printed.
cli.py builds the argparse parser from the table and runs the row the command line names; a new
command is a new row here, not a new function.

Every client command gets ``--json``; a command with ``wait`` help also gets ``--wait`` and
``--timeout``, and its exit status is 1 when the object it returns failed (``outcome``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelhub_client.cli_account import login, logout
from modelhub_client.cli_output import (
    BACKBONE_HEADERS,
    HEAD_HEADERS,
    JOB_HEADERS,
    Table,
    assembly_rows,
    backbone_rows,
    export_rows,
    head_rows,
    job_rows,
    show_assembly,
    show_backbone,
    show_dataset,
    show_export,
    show_head,
    show_import,
    show_job,
    team_rows,
)
from modelhub_client.cli_rows import Arg, Call, Command, Group, OneOf, wait_if_asked

if TYPE_CHECKING:
    from modelhub_client.client import Client

HEAD_STATUSES = ["validating", "rejected", "draft", "in_review", "changes_requested", "approved", "archived"]
BACKBONE_STATUSES = ["validating", "ready", "rejected", "deduplicated"]
JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
EXPORT_FORMATS = ["onnx", "litert"]
EXPORT_QUANTIZATIONS = ["none", "float16", "dynamic_int8"]
JOB_KINDS = ["train_head", "train_heads", "fine_tune", "grow_backbone"]


# --- Argument types -----------------------------------------------------------------------------


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


# --- The steps a few rows need ------------------------------------------------------------------


def review(method: str) -> Callable[[Client, argparse.Namespace], Any]:
    """Call ``client.<method>(id, comment)`` for each id; return the head, or the heads when several."""

    def call(client: Client, args: argparse.Namespace) -> Any:
        heads = [getattr(client, method)(head_id, args.comment or "") for head_id in args.ids]
        return heads[0] if len(heads) == 1 else heads

    return call


def train_head(client: Client, args: argparse.Namespace) -> Any:
    """Call ``client.train_head`` with the head spec that --head, --hidden, --dropout, ... describe."""
    head: dict[str, Any] = {"type": args.head}
    for key in ("hidden", "dropout", "units", "activation"):
        if getattr(args, key) is not None:
            head[key] = getattr(args, key)
    return client.train_head(
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


def wait_and_download(args: argparse.Namespace, client: Client, assembly: Any) -> Any:
    """With --wait or --download, wait for the assembly (or export); with --download, stream its file."""
    if args.wait or args.download:
        assembly = client.wait(assembly, timeout=args.timeout)
    if args.download and not assembly.failed:
        client.download(assembly, args.download)
    return assembly


def follow_or_wait(args: argparse.Namespace, client: Client, job: Any) -> Any:
    """With --follow, print the job's log lines as they come (stderr under --json); with --wait, wait."""
    if args.follow:
        log_stream = sys.stderr if args.json else sys.stdout
        for line in client.follow(job, timeout=args.timeout):
            print(line, file=log_stream, flush=True)
        return client.job(job)
    return wait_if_asked(args, client, job)


def object_id(what: str) -> Arg:
    return Arg("id", type=int, help=f"{what} id")


TEAM = Arg("--team", required=True, metavar="TEAM", help="team slug")
DOWNLOAD = Arg("--download", metavar="FILE", help="wait, then stream the zip to FILE and verify its sha256")
FOLLOW_HELP = "print its log lines as it runs, until it ends"

# --- The table ----------------------------------------------------------------------------------

COMMANDS: tuple[Group | Command, ...] = (
    Command(
        ("login",),
        "exchange a username and password for an API token and save it",
        "Exchange a username and password for a new API token (POST /api/auth/token/) and save the\n"
        "server URL and token in $XDG_CONFIG_HOME/modelhub/config.toml (default ~/.config/...), mode\n"
        "0600. Later commands use them unless MODELHUB_URL / MODELHUB_TOKEN say otherwise. The token\n"
        "expires after the server's MODELHUB_EXCHANGED_TOKEN_DAYS; log in again then.",
        arguments=(
            Arg("server", metavar="URL", help="the server's base URL, e.g. https://modelhub.example"),
            Arg("--username", help="your user name (default: asked)"),
            Arg(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of stdin (for scripts)",
            ),
        ),
        local=login,
    ),
    Command(("logout",), "revoke the saved token on the server and remove it from the config file", local=logout),
    Command(
        ("teams",),
        "list your teams and your role in each",
        call=Call("teams"),
        show=Table(["TEAM", "NAME", "ROLE"], team_rows, empty="No teams."),
    ),
    Command(
        ("import",),
        "import a folder of full models as one backbone version plus one draft head per file",
        "Import the .keras full models in DIR (fine-tuned copies of one backbone, each with its own\n"
        "head) as one backbone version plus one draft head per file, all or nothing. Each file is\n"
        "uploaded first (skipped when the team has its bytes already), then a worker splits them.\n"
        "Task slugs come from the file names (Topic Model.keras -> topic-model) unless --tasks says.",
        arguments=(
            Arg("directory", metavar="DIR", help="folder of .keras files (sorted by name)"),
            TEAM,
            Arg("--backbone-name", required=True, metavar="NAME", help="name of the shared backbone"),
            Arg(
                "--feature-layer",
                metavar="LAYER",
                help="last layer of the shared backbone (default: the deepest layer the models share; required "
                "for a single file)",
            ),
            Arg(
                "--branches",
                action="store_true",
                help="models that fine-tuned the backbone's top keep those layers as a branch (else any difference "
                "fails)",
            ),
            Arg(
                "--min-shared-fraction",
                type=float,
                default=None,
                help="with --branches: the least share of the backbone's parameters every model must share "
                "(default 0.5)",
            ),
            Arg("--tasks", type=name_list, help="task slugs, one per file in name order: a,b,c"),
        ),
        call=Call(
            "import_models",
            positional=("directory",),
            keywords=("team", "backbone_name", "feature_layer", "branches", "min_shared_fraction", "tasks"),
        ),
        show=show_import,
        wait="wait for the worker and print the per-file report (exit 1 if it failed)",
    ),
    Group("imports", "show an import and its per-file report"),
    Command(
        ("imports", "show"),
        "show an import (and wait for it)",
        arguments=(object_id("import"),),
        call=Call("model_import", positional=("id",)),
        show=show_import,
        wait="wait until the worker is done",
    ),
    Group(
        "heads",
        "list, show, upload and review heads",
        "Heads and their review. Statuses: validating -> draft -> in_review -> approved |\n"
        "changes_requested (-> in_review again); rejected when validation fails; archived.\n"
        "Approving or requesting changes needs a reviewer or admin who did not author the head.",
    ),
    Command(
        ("heads", "list"),
        "list head versions of your teams",
        arguments=(
            Arg("--team", help="team slug"),
            Arg("--task", help="task slug"),
            Arg("--status", choices=HEAD_STATUSES, help="review status"),
            Arg("--backbone", type=int, metavar="ID", help="backbone version id"),
        ),
        call=Call("heads", keywords=("team", "task", "status", "backbone")),
        show=Table(HEAD_HEADERS, head_rows, empty="No heads match."),
    ),
    Command(
        ("heads", "show"),
        "show one head version",
        arguments=(object_id("head version"),),
        call=Call("head", positional=("id",)),
        show=show_head,
        wait="wait until validation is done",
    ),
    Command(
        ("heads", "upload"),
        "upload a head (or a full model containing the backbone) for a task",
        "Upload a head model (its input is the backbone's features) or a full model that contains\n"
        "the backbone, as a new draft version of TASK. A worker validates it first.",
        arguments=(
            Arg("file", metavar="FILE", help=".keras file"),
            Arg("--backbone", type=int, required=True, metavar="ID", help="backbone version id"),
            Arg("--task", required=True, help="task slug, e.g. sentiment"),
            Arg("--labels", type=name_list, help="class labels in output order: neg,pos"),
            Arg("--description", default="", help="free text"),
        ),
        call=Call("upload_head", positional=("file",), keywords=("backbone", "task", "labels", "description")),
        show=show_head,
        wait="wait for validation (exit 1 if rejected)",
    ),
    Command(
        ("heads", "submit"),
        "ask for review: draft or changes_requested -> in_review",
        arguments=(
            Arg("ids", metavar="ID", type=int, nargs="+", help="head version id(s)"),
            Arg("--comment", help="a note for the reviewer"),
        ),
        call=review("submit"),
        show=Table(HEAD_HEADERS, head_rows),
    ),
    Command(
        ("heads", "approve"),
        "approve heads in review (reviewers and admins, not the author)",
        arguments=(
            Arg("ids", metavar="ID", type=int, nargs="+", help="head version id(s)"),
            Arg("--comment", help="a review comment"),
        ),
        call=review("approve"),
        show=Table(HEAD_HEADERS, head_rows),
    ),
    Command(
        ("heads", "request-changes"),
        "send heads in review back to their author",
        arguments=(
            Arg("ids", metavar="ID", type=int, nargs="+", help="head version id(s)"),
            Arg("--comment", required=True, help="what to change (required)"),
        ),
        call=review("request_changes"),
        show=Table(HEAD_HEADERS, head_rows),
    ),
    Command(
        ("assemble",),
        "assemble heads on a backbone into one SavedModel (and download it)",
        "Assemble heads on a backbone into one SavedModel f(inputs, task_id). Without --heads or\n"
        "--alias: every approved head on the backbone. The same backbone and heads give back the\n"
        "existing assembly. Statuses: queued -> building -> verifying -> ready | failed.",
        arguments=(
            TEAM,
            Arg("--backbone", type=int, required=True, metavar="ID", help="backbone version id"),
            OneOf(
                (
                    Arg("--heads", type=id_list, metavar="ID,ID", help="head version ids: 4,5,9"),
                    Arg(
                        "--alias",
                        metavar="NAME",
                        help="the heads a release alias names (needs a server with release aliases)",
                    ),
                )
            ),
            Arg("--name", default="", help="a name for the assembly (the download's file name)"),
            DOWNLOAD,
        ),
        call=Call("assemble", keywords=("team", "backbone", "heads", "alias", "name")),
        then=wait_and_download,
        show=show_assembly,
        wait="wait until it is ready or failed (exit 1 if it failed)",
    ),
    Command(
        ("export",),
        "export an assembly to ONNX or LiteRT (and download it)",
        "Export a ready assembly to ONNX (ONNX Runtime, Triton) or LiteRT (phones). A worker converts it\n"
        "and checks every task against the SavedModel before offering the file; the report gives the\n"
        "max abs diff and the argmax agreement per task. The same assembly, format and quantization give\n"
        "back the existing export (a failed one is tried again). Statuses: queued -> exporting -> ready | failed.",
        arguments=(
            Arg("assembly", type=int, metavar="ASSEMBLY", help="assembly id"),
            Arg("--format", required=True, choices=EXPORT_FORMATS, help="onnx or litert"),
            Arg("--quantization", default="none", choices=EXPORT_QUANTIZATIONS, help="default: none"),
            Arg("--dataset", type=int, metavar="ID", help="also report argmax agreement on this dataset's rows"),
            Arg("--download", metavar="FILE", help="wait, then stream the file to FILE and verify its sha256"),
        ),
        call=Call("export_create", positional=("assembly",), keywords=("format", "quantization", "dataset")),
        then=wait_and_download,
        show=show_export,
        wait="wait until it is ready or failed (exit 1 if it failed)",
    ),
    Group("exports", "list the exports of an assembly"),
    Command(
        ("exports", "list"),
        "list the exports of an assembly (ONNX, LiteRT)",
        arguments=(object_id("assembly"),),
        call=Call("export_list", positional=("id",)),
        show=Table(
            ["ID", "FORMAT", "QUANTIZATION", "STATUS", "SIZE", "MAX_ABS_DIFF"], export_rows, empty="No exports."
        ),
    ),
    Group("assemblies", "list, show or download assemblies"),
    Command(
        ("assemblies", "list"),
        "list the assemblies of your teams",
        call=Call("assemblies"),
        show=Table(
            ["ID", "TEAM", "NAME", "BACKBONE", "STATUS", "TASKS", "SIZE"], assembly_rows, empty="No assemblies."
        ),
    ),
    Command(
        ("assemblies", "show"),
        "show an assembly: its tasks, checksum, verification",
        arguments=(object_id("assembly"), DOWNLOAD),
        call=Call("assembly", positional=("id",)),
        then=wait_and_download,
        show=show_assembly,
        wait="wait until it is ready or failed",
    ),
    Group("backbones", "list, show or upload backbone versions"),
    Command(
        ("backbones", "list"),
        "list backbone versions of your teams",
        arguments=(
            Arg("--team", help="team slug"),
            Arg("--name", help="backbone name"),
            Arg("--status", choices=BACKBONE_STATUSES, help="status"),
        ),
        call=Call("backbones", keywords=("team", "name", "status")),
        show=Table(BACKBONE_HEADERS, backbone_rows, empty="No backbones match."),
    ),
    Command(
        ("backbones", "show"),
        "show one backbone version",
        arguments=(object_id("backbone version"),),
        call=Call("backbone", positional=("id",)),
        show=show_backbone,
        wait="wait until validation is done",
    ),
    Command(
        ("backbones", "upload"),
        "upload a backbone .keras file as a new version of NAME",
        "Upload a backbone .keras file as a new version of NAME (a worker validates it: validating\n"
        "-> ready | rejected | deduplicated). The same bytes again give back the existing version.",
        arguments=(
            Arg("file", metavar="FILE", help=".keras file"),
            TEAM,
            Arg("--name", required=True, help="backbone name"),
            Arg(
                "--feature-layer",
                default="",
                metavar="LAYER",
                help="the layer whose output heads read (default: the model's output)",
            ),
            Arg("--description", default="", help="free text"),
        ),
        call=Call("upload_backbone", positional=("file",), keywords=("team", "name", "feature_layer", "description")),
        show=show_backbone,
        wait="wait for validation (exit 1 if rejected)",
    ),
    Group("datasets", "upload or show datasets"),
    Command(
        ("datasets", "upload"),
        "upload a dataset: a table (.csv, .jsonl, .parquet), an .npz or a .zip of image folders",
        "Upload a dataset (a worker validates it: validating -> ready | rejected). Map a table's\n"
        'columns with --columns, e.g. \'{"inputs": {"text": "review"}, "label": "sentiment"}\'.',
        arguments=(
            Arg("file", metavar="FILE", help=".csv, .jsonl, .ndjson, .parquet, .npz or .zip"),
            TEAM,
            Arg("--name", required=True, help="dataset name"),
            Arg("--columns", metavar="JSON", help="column mapping of a table: inputs, label, validation, label_order"),
        ),
        call=Call("upload_dataset", positional=("file",), keywords=("team", "name", "columns")),
        show=show_dataset,
        wait="wait for validation (exit 1 if rejected)",
    ),
    Command(
        ("datasets", "show"),
        "show one dataset: inputs, preview and the backbones it fits",
        arguments=(object_id("dataset"),),
        call=Call("dataset", positional=("id",)),
        show=show_dataset,
        wait="wait until validation is done",
    ),
    Group("jobs", "train heads; list, show, follow and cancel jobs"),
    Command(
        ("jobs", "train-head"),
        "train a new head on a backbone's frozen features",
        "Train a new head for TASK on the backbone's frozen features (computed once per dataset and\n"
        "cached). The new head version is a draft to review. Options left out take the server's\n"
        "defaults; the server names any bad value.",
        arguments=(
            TEAM,
            Arg("--backbone", type=int, required=True, metavar="ID", help="backbone version id (ready)"),
            Arg("--dataset", type=int, required=True, metavar="ID", help="dataset id (ready, fitting the backbone)"),
            Arg("--task", required=True, help="task slug of the new head"),
            Arg("--head", choices=["dense", "mlp"], default="dense", help="head type (default: dense)"),
            Arg("--hidden", type=int_list, metavar="N,N", help="hidden layer sizes of an mlp head: 64,32"),
            Arg("--dropout", type=float, help="dropout after each hidden layer of an mlp head, in [0, 1)"),
            Arg("--units", type=int, help="output width (default: the dataset's number of classes)"),
            Arg("--activation", choices=["softmax", "sigmoid", "linear"], help="output activation"),
            Arg("--epochs", type=int, help="training epochs"),
            Arg("--batch-size", type=int, help="batch size"),
            Arg("--learning-rate", type=float, help="Adam learning rate"),
            Arg("--seed", type=int, help="random seed, for a repeatable run"),
            Arg("--early-stopping-patience", type=int, metavar="EPOCHS", help="stop early on validation loss"),
            Arg("--follow", action="store_true", help="print the job's log lines as it runs, until it ends"),
        ),
        call=train_head,
        then=follow_or_wait,
        show=show_job,
        wait="wait until the job ends (exit 1 if it failed or was cancelled)",
    ),
    Command(
        ("jobs", "list"),
        "list jobs of your teams, newest first",
        arguments=(
            Arg("--team", help="team slug"),
            Arg("--kind", choices=JOB_KINDS, help="job kind"),
            Arg("--status", choices=JOB_STATUSES, help="status"),
        ),
        call=Call("jobs", keywords=("team", "kind", "status")),
        show=Table(JOB_HEADERS, job_rows, empty="No jobs match."),
    ),
    Command(
        ("jobs", "show"),
        "show a job: status, progress, metrics, log",
        arguments=(object_id("job"), Arg("--follow", action="store_true", help=FOLLOW_HELP)),
        call=Call("job", positional=("id",)),
        then=follow_or_wait,
        show=show_job,
        wait="wait until it ends",
    ),
    Command(
        ("jobs", "cancel"),
        "cancel a queued or running job",
        arguments=(object_id("job"),),
        call=Call("cancel_job", positional=("id",)),
        show=show_job,
    ),
)
