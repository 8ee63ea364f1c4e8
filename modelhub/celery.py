"""The Celery app: queues, routing and the delivery guarantees ModelHub relies on.

Queues: `default` (validation, imports, housekeeping), `training` (TensorFlow training; point
MODELHUB_TRAINING_QUEUE at a GPU fleet) and `assembly` (SavedModel builds). Routing is by task
name prefix, so task modules only choose good names.

Delivery: `acks_late` + `task_reject_on_worker_lost` mean a message is acknowledged only after
the task returns, and a worker killed mid-task (OOM, SIGKILL) puts it back on the queue instead
of losing it silently. Every task therefore guards on its row's status
(core.tracked_work), and a redelivered message for a row still marked running is
recorded as "worker lost" rather than run twice.
"""

import os

from celery import Celery
from kombu import Queue
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
# The embedded default's broker writes each message atomically (see modelhub/broker.py).
TRANSPORT_ALIASES["filesystem"] = "modelhub.broker:Transport"

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")


def route_task(name, args, kwargs, options, task=None, **kw):
    """Send training.* tasks to the training queue, assembly tasks to assembly, webhooks.* to the
    webhook queue (default unless MODELHUB_WEBHOOK_QUEUE says otherwise), the rest to default."""
    from django.conf import settings

    if name.startswith("training."):
        return {"queue": settings.MODELHUB_TRAINING_QUEUE}
    if name.startswith("assemblies."):
        return {"queue": settings.MODELHUB_ASSEMBLY_QUEUE}
    if name.startswith("webhooks."):
        return {"queue": settings.MODELHUB_WEBHOOK_QUEUE}
    return {"queue": settings.MODELHUB_DEFAULT_QUEUE}


app.conf.update(
    task_queues=[Queue("default"), Queue("training"), Queue("assembly")],
    task_default_queue="default",
    task_routes=(route_task,),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
