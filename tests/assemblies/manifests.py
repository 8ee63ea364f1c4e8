"""Assembly manifests rewritten for web-side tests: the backbone inputs a worker would record
for a two-input, a text (string) and an old single-"input" backbone, and a stand-in worker that
answers trial predictions in the web process."""

from assemblies import services
from assemblies.models import Assembly, Prediction

TWO_INPUTS = [
    {"name": "token_ids", "shape": [None, 12], "dtype": "int32"},
    {"name": "numeric", "shape": [None, 5], "dtype": "float32"},
]
TEXT_INPUT = [{"name": "inputs", "shape": [None, 1], "dtype": "string"}]


def with_inputs(assembly: Assembly, inputs: list[dict]) -> Assembly:
    """Rewrite a ready assembly's manifest as the current builder writes it for these backbone inputs."""
    manifest = dict(assembly.manifest)
    backbone = {key: value for key, value in manifest["backbone"].items() if key != "input"}
    backbone["inputs"] = inputs
    if len(inputs) == 1:
        backbone["input"] = inputs[0]
    manifest["backbone"] = backbone
    manifest["serving"] = dict(manifest["serving"], inputs=[entry["name"] for entry in inputs] + ["task_id"])
    Assembly.objects.filter(pk=assembly.pk).update(manifest=manifest)
    assembly.refresh_from_db()
    return assembly


def as_old_single_input(assembly: Assembly) -> Assembly:
    """Rewrite a ready assembly's manifest as builders before several-input support wrote it: one
    ``backbone.input`` and no ``backbone.inputs`` (stored rows of that age still exist)."""
    manifest = dict(assembly.manifest)
    manifest["backbone"] = {key: value for key, value in manifest["backbone"].items() if key != "inputs"}
    Assembly.objects.filter(pk=assembly.pk).update(manifest=manifest)
    assembly.refresh_from_db()
    return assembly


def fake_worker(monkeypatch) -> list:
    """Answer every queued prediction at once (0.25 per output); return the stored inputs it saw."""
    seen = []

    queue_other = services.queue_on_commit

    def queue(task_name: str, prediction_id: int) -> None:
        if task_name != "assemblies.predict":  # builds are queued as usual
            queue_other(task_name, prediction_id)
            return
        prediction = Prediction.objects.select_related("assembly").get(pk=prediction_id)
        seen.append(prediction.inputs)
        widths = {e["task_id"]: e["output_width"] for e in prediction.assembly.manifest["heads"]}
        first = next(iter(prediction.inputs.values())) if isinstance(prediction.inputs, dict) else prediction.inputs
        # A protocol's mixed batch carries a task per row (inputs["task_id"]): each row its head's width.
        row_tasks = (prediction.inputs.get("task_id") if isinstance(prediction.inputs, dict) else None) or [
            prediction.task_id
        ] * len(first)
        outputs = [[0.25] * widths[task_id] for task_id in row_tasks]
        Prediction.objects.filter(pk=prediction_id).update(status=Prediction.Status.SUCCEEDED, outputs=outputs)

    monkeypatch.setattr(services, "queue_on_commit", queue)
    return seen


def with_branches(assembly: Assembly, *, branch_points: list[str]) -> Assembly:
    """Rewrite a ready assembly's manifest as the builder writes it for branched heads: each task's
    ``branch`` (after_layer, layer count, params, sha256) and the trunk cut at `branch_points`."""
    manifest = dict(assembly.manifest)
    heads = []
    distinct = set()
    for entry in assembly.entries.select_related("head", "head__branch_blob").order_by("task_id"):
        head, branch = entry.head, None
        if head.branch_blob_id is not None:
            branch = {
                "after_layer": head.branch["after_layer"],
                "layers": len(head.branch["layers"]),
                "params": head.branch["params"],
                "sha256": head.branch_blob.sha256,
            }
            distinct.add((branch["sha256"], branch["after_layer"]))
        heads.append(dict(manifest["heads"][entry.task_id], branch=branch))
    has_plain = any(head["branch"] is None for head in heads)
    trunk = {
        "branch_points": branch_points,
        "distinct_branches": len(distinct),
        "segments": len(branch_points) + (1 if has_plain else 0),
    }
    manifest["heads"] = heads
    manifest["backbone"] = dict(manifest["backbone"], trunk=trunk)
    Assembly.objects.filter(pk=assembly.pk).update(manifest=manifest)
    assembly.refresh_from_db()
    return assembly
