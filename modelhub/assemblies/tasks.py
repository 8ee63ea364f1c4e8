"""Celery tasks for assemblies (routed to the `assembly` queue by their name)."""

from modelhub.celery import app


@app.task(name="assemblies.build")
def build_assembly(assembly_id: int) -> None:
    """Build, verify, zip and store the assembly's SavedModel."""
    from modelhub.assemblies.building import assembly_build

    assembly_build(assembly_id=assembly_id)
