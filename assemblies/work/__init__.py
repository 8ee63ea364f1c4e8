"""Worker-side work of assemblies: what a Celery task of assemblies.tasks calls, one module per job.

building (build, verify, zip and store a SavedModel), predicting (run a trial prediction).
TensorFlow is imported inside functions only.
"""
