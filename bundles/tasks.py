"""Celery tasks of the deployment bundle (bundles.* routes to the default queue)."""

from modelhub.celery import app


@app.task(name="bundles.rewrite")
def rewrite_bundle() -> None:
    """Write the bundle's new SavedModel folders and its models.config (bundles.work)."""
    from bundles.work import bundle_write

    bundle_write()
