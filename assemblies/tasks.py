"""Celery tasks for assemblies (routed to the `assembly` queue by their name)."""

from modelhub.celery import app


@app.task(name="assemblies.build")
def build_assembly(assembly_id: int) -> None:
    """Build, verify, zip and store the assembly's SavedModel."""
    from assemblies.work.building import assembly_build

    assembly_build(assembly_id=assembly_id)


@app.task(name="assemblies.export")
def export_assembly(export_id: int) -> None:
    """Convert a ready assembly to ONNX or LiteRT, verify it against its SavedModel and store the file."""
    from assemblies.work.exporting import export_build

    export_build(export_id=export_id)


@app.task(name="assemblies.predict")
def run_prediction(prediction_id: int) -> None:
    """Compute a trial prediction on an assembly."""
    from assemblies.work.predicting import prediction_compute

    prediction_compute(prediction_id=prediction_id)
