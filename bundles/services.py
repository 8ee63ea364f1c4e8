"""Writes of the bundle: queue its rewrite when an assembly becomes ready or an alias moves."""

from django.db import transaction

REWRITE_TASK = "bundles.rewrite"
# An ONNX export that becomes ready joins the Triton repository.
EVENTS = ("assembly.ready", "alias.moved", "export.ready")


def bundle_rewrite_queue() -> None:
    """Send the rewrite task once the current transaction commits (it rewrites the whole bundle; cheap)."""
    from modelhub.celery import app

    transaction.on_commit(lambda: app.send_task(REWRITE_TASK))


def bundle_rewrite_on_event(sender, *, team_id: int, event: str, data: dict, **kwargs) -> None:
    """A core.events subscriber: rewrite the bundle after an event that changes it."""
    if event in EVENTS:
        bundle_rewrite_queue()
