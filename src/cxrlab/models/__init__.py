"""Models: a registry of classifiers by name (simple CNN, fusion net, any timm backbone)."""

from cxrlab.models.registry import build_model, cam_layer, head_parameters, list_models, penultimate
from cxrlab.models.task import activation

__all__ = ["activation", "build_model", "cam_layer", "head_parameters", "list_models", "penultimate"]
