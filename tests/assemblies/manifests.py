"""Hand-written assembly manifests for web-side tests: the backbone inputs a worker would record
for a two-input, a text (string) and an old single-"input" backbone, and a stand-in worker that
answers trial predictions in the web process."""

from modelhub.assemblies import predicting
from modelhub.assemblies.models import Assembly, Prediction

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


def fake_worker(monkeypatch) -> list:
    """Answer every queued prediction at once (0.25 per output); return the stored inputs it saw."""
    seen = []

    def queue(task_name: str, prediction_id: int) -> None:
        prediction = Prediction.objects.select_related("assembly").get(pk=prediction_id)
        seen.append(prediction.inputs)
        entry = next(e for e in prediction.assembly.manifest["heads"] if e["task_id"] == prediction.task_id)
        first = next(iter(prediction.inputs.values())) if isinstance(prediction.inputs, dict) else prediction.inputs
        outputs = [[0.25] * entry["output_width"] for _ in first]
        Prediction.objects.filter(pk=prediction_id).update(status=Prediction.Status.SUCCEEDED, outputs=outputs)

    monkeypatch.setattr(predicting, "queue_on_commit", queue)
    return seen
