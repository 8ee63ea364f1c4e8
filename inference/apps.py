"""Django app config of the inference protocols: Open Inference Protocol v2 and TF Serving's REST shape.

No models: both protocols are other doors to the trial predict of assemblies (a worker runs it).
"""

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "inference"
