"""Writes of the bundle: queue its rewrite when an assembly becomes ready or an alias moves."""

from django.db import transaction

REWRITE_TASK = "bundles.rewrite"
# An ONNX export that becomes ready joins the Triton repository.
EVENTS = ("assembly.ready", "alias.moved", "export.ready")


def bundle_rewrite_queue() -> None:
    """Send the rewrite task once the current transaction commits (it rewrites the whole bundle; cheap)."""
    from modelhub.celery import app

    transaction.on_commit(lambda: app.send_task(REWRITE_TASK))


def bundle_rewrite_on_resolution(sender, *, instance, update_fields=None, **kwargs) -> None:
    """A post_save receiver of Assembly: a ready assembly an alias resolved to again (its resolved_at
    moved, no assembly.ready follows) may now carry that alias's label: rewrite the bundle."""
    if update_fields and "resolved_at" in update_fields and instance.status == "ready":
        bundle_rewrite_queue()


def bundle_rewrite_on_event(sender, *, team_id: int, event: str, data: dict, **kwargs) -> None:
    """A core.events subscriber: rewrite the bundle after an event that changes it."""
    if event in EVENTS:
        bundle_rewrite_queue()
