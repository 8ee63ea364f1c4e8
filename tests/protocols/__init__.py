"""Tests of the protocols other tools speak: OIP v2, TF Serving REST, MLflow, Prometheus, bundles."""
