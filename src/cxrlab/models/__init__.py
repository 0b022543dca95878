"""Models: a registry of classifiers by name (simple CNN, any timm backbone)."""

from cxrlab.models.registry import build_model, cam_layer, head_parameters, list_models

__all__ = ["build_model", "cam_layer", "head_parameters", "list_models"]
