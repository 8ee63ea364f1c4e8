"""Worker-side work of backbones: what a Celery task of backbones.tasks calls, one module per job.

validation (inspect an uploaded backbone, find its branch points), loading (fetch and load model
files safely; public to other apps' worker code). TensorFlow is imported inside functions only.
"""
