"""Assemble one backbone and many heads into a single SavedModel ``f(inputs, task_id)``, and verify it.

- :mod:`.build`: the entry point: check, write the SavedModel and manifest, verify.
- :mod:`.manifest`: signature names, the heads to assemble, the manifest.
- :mod:`.module`: the ``tf.Module`` and its signatures.
- :mod:`.head_stage`: each row runs only its own task's head (stacked Dense chains, Keras heads).
- :mod:`.trunk`: heads that own branches: the trunk once per batch, each branch on its rows.
- :mod:`.backbone_graph`: a backbone inside the module: its lookup tables, no empty batches.
- :mod:`.verify`: every head checked against the component models on probe inputs.
"""
