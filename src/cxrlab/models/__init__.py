"""Models: a registry of classifiers by name (simple CNN, any timm backbone)."""

from cxrlab.models.registry import build_model, cam_layer, list_models

__all__ = ["build_model", "cam_layer", "list_models"]
