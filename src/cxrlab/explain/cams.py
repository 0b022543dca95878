"""Class activation maps via captum (Grad-CAM = captum's LayerGradCam).

The model is put in eval mode for the computation and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM maps (B, H, W) at the input resolution, one target class per image.

    Args:
        model: classifier returning logits (B, L).
        layer: the convolutional block to explain (see ``cxrlab.models.cam_layer``).
        x: normalised input batch (B, C, H, W).
        targets: the class index to explain for each image.
    """
    from captum.attr import LayerGradCam

    with eval_mode(model):
        cam = LayerGradCam(model, layer)
        attr = cam.attribute(x, target=list(targets), relu_attributions=True)
        attr = F.interpolate(attr.detach().float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return attr[:, 0].cpu().numpy()
