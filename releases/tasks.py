"""Celery tasks of the release workflow (webhooks.* routes to MODELHUB_WEBHOOK_QUEUE)."""

from modelhub.celery import app


@app.task(name="webhooks.deliver")
def deliver_webhook(delivery_id: int) -> None:
    """Send one try of a webhook delivery and record it; the next try, if any, is queued with a countdown."""
    from releases.work import webhook_deliver

    webhook_deliver(delivery_id=delivery_id)
