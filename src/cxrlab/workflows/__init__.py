"""Workflows: run-level features composed from the leaves (the Python API behind the CLI).

The only layer that opens run folders, builds manifests, runs models and
renders reports.  Nothing below imports it (checked by import-linter).
"""

from cxrlab.workflows.audit import audit_run
from cxrlab.workflows.ensemble import ensemble_runs
from cxrlab.workflows.evaluate import compare_runs, evaluate_run, report_run
from cxrlab.workflows.experiment import run_experiment
from cxrlab.workflows.explain import explain_images
from cxrlab.workflows.external import evaluate_external
from cxrlab.workflows.localize import localize_run
from cxrlab.workflows.predict import export_onnx, predict_images
from cxrlab.workflows.subgroups import subgroups_run
from cxrlab.workflows.uncertainty import uncertainty_run

__all__ = ["audit_run", "compare_runs", "ensemble_runs", "evaluate_external", "evaluate_run", "explain_images", "export_onnx", "localize_run",
           "predict_images", "report_run", "run_experiment", "subgroups_run", "uncertainty_run"]
