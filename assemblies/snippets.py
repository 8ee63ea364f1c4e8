"""Usage snippets of a ready assembly: Python and TF Serving REST examples filled in with its inputs.

The detail page shows them; they are built from the manifest's inputs (names, shapes, dtypes)
with the example values of assemblies.inputs, so what a user copies runs against this SavedModel.
"""

import json

from assemblies.inputs import EXAMPLE_TEXTS, describe_input, dtype_kind, example_dims, example_row, manifest_inputs
from assemblies.models import Assembly

MAX_INLINE_VALUES = 64
PYTHON_HEADER = """import numpy as np
import tensorflow as tf

model = tf.saved_model.load("model")  # the unzipped folder
"""


def _shape_literal(dims: list[int]) -> str:
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(map(str, dims))})"


def _python_value(spec: dict, *, num_rows: int) -> str:
    """Return a Python expression for `num_rows` examples of an input."""
    shape = _shape_literal([num_rows, *example_dims(spec)])
    kind = dtype_kind(spec["dtype"])
    if kind == "string":
        rows = [example_row(spec, max_values=MAX_INLINE_VALUES, row=row) for row in range(num_rows)]
        return json.dumps(rows) if None not in rows else f'np.full({shape}, "{EXAMPLE_TEXTS[0]}")'
    if kind in ("int", "bool"):
        return f'np.random.randint(0, 2, size={shape}).astype("{spec["dtype"]}")'
    return f'np.random.standard_normal({shape}).astype("{spec["dtype"]}")'


def _json_generator(spec: dict) -> str:
    """Return a Python expression that builds one row of an input as JSON values (for large inputs)."""
    shape = _shape_literal([1, *example_dims(spec)])
    if dtype_kind(spec["dtype"]) == "string":
        return f'np.full({shape}, "{EXAMPLE_TEXTS[0]}").tolist()'
    return f'np.zeros({shape}, "{spec["dtype"]}").tolist()'


def usage_snippets(assembly: Assembly) -> dict:
    """Python and TF Serving REST examples filled in with this assembly's inputs (names, shapes, dtypes)."""
    specs = manifest_inputs(assembly.manifest)
    heads = assembly.manifest["heads"]
    example = heads[1] if len(heads) > 1 else heads[0]  # a task_id other than 0 shows that it matters
    task, task_id = example["task"], example["task_id"]
    task_ids = f"task_id=tf.constant([{task_id}, {task_id}], tf.int32)"
    by_task = f'task=tf.constant(["{task}", "{task}"])'
    if len(specs) == 1:
        call = f"    inputs=tf.constant(x), {task_ids}\n"
        inputs = f"x = {_python_value(specs[0], num_rows=2)}  # {describe_input(specs[0], with_name=False)}\n"
        single_call = "inputs=tf.constant(x)"
    else:
        lines = "".join(
            f'    "{spec["name"]}": {_python_value(spec, num_rows=2)},  # {describe_input(spec, with_name=False)}\n'
            for spec in specs
        )
        inputs = (
            "# every backbone input by name\n"
            f"x = {{\n{lines}}}\n"
            "inputs = {name: tf.constant(value) for name, value in x.items()}\n"
        )
        call = f"    **inputs, {task_ids}\n"
        single_call = "**inputs"
    python = (
        f"{PYTHON_HEADER}{inputs}\n"
        f"# serving_default: every row picks its head with task_id ({task_id} = {task})\n"
        'result = model.signatures["serving_default"](\n'
        f"{call}"
        ")\n"
        'width = int(result["output_width"][0])\n'
        f'{task.replace("-", "_")} = result["outputs"][:, :width]  # zero-padded to the widest head\n'
    )
    if "serving_by_task" in (assembly.signatures or []):
        python += (
            "\n# serving_by_task: the same, with task slugs (an unknown slug raises an error naming it)\n"
            'result = model.signatures["serving_by_task"](\n'
            f"{call.replace(task_ids, by_task)}"
            ")\n"
        )
    if assembly.task_signatures:
        python += (
            "\n# or call one task's own signature (this assembly has them)\n"
            f'outputs = model.signatures["{task}"]({single_call})["outputs"]\n'
        )
    rows = {spec["name"]: example_row(spec, max_values=MAX_INLINE_VALUES) for spec in specs}
    body = {
        "signature_name": "serving_default",
        "inputs": {**{name: [row] for name, row in rows.items()}, "task_id": [task_id]},
    }
    if None not in rows.values():
        rest = json.dumps(body)
        rest_note = ""
    else:
        for spec in specs:
            if rows[spec["name"]] is None:
                body["inputs"][spec["name"]] = f"<one {example_dims(spec)} {spec['dtype']} array per row>"
        rest = json.dumps(body, indent=2)
        values = ", ".join(f'"{spec["name"]}": {_json_generator(spec)}' for spec in specs)
        rest_note = (
            f"python -c 'import json, numpy as np; x = {{{values}}}; "
            f'print(json.dumps({{"signature_name": "serving_default", '
            f'"inputs": {{**x, "task_id": [{task_id}]}}}}))\' > body.json'
        )
    by_task_body = None
    if "serving_by_task" in (assembly.signatures or []) and None not in rows.values():
        by_task_body = json.dumps(
            {"signature_name": "serving_by_task", "inputs": {**{n: [r] for n, r in rows.items()}, "task": [task]}}
        )
    return {
        "python": python,
        "rest_body": rest,
        "rest_by_task": by_task_body,
        "rest_generator": rest_note,
        "task": task,
        "task_id": task_id,
        "inputs": specs,
    }
