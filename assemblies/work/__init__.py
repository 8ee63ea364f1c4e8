"""Worker-side work of assemblies: what a Celery task of assemblies.tasks calls, one module per job.

building (build, verify, zip and store a SavedModel), exporting (ONNX or LiteRT, verified against
the SavedModel), predicting (run a trial prediction); components (the parts building and exporting load).
TensorFlow is imported inside functions only.
"""
