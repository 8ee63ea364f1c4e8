"""Worker-side work of heads: what a Celery task of heads.tasks calls, one module per job.

validation (check an uploaded head against its backbone), importing (K full models into one
backbone + K heads), model_files (read and write head model files; public to other apps' worker
code). Every module imports TensorFlow and modelhub.ml inside its functions only.
"""
