"""Attribution maps: Grad-CAM and saliency (captum), Grad-CAM++ (pytorch-grad-cam).

Every method returns maps of shape (B, H, W) at the input resolution, one
target class per image.  The model is put in eval mode for the computation
and its previous mode restored afterwards (pytorch-grad-cam's constructor
calls ``model.eval()`` on the caller's model; we undo that).

=============  =================================================================
method         what
=============  =================================================================
``gradcam``    captum ``LayerGradCam`` on the last conv block, ReLU, bilinear
               upsampling (Witon, Friedrich & Lobmayr call it LayerGradCam; alias ``layergradcam``)
``gradcam++``  pytorch-grad-cam ``GradCAMPlusPlus`` on the same layer
``saliency``   captum ``Saliency``: absolute input gradient, max over channels
=============  =================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.errors import CxrlabError

METHODS = ("gradcam", "layergradcam", "gradcam++", "saliency")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM maps (B, H, W) via captum's LayerGradCam."""
    from captum.attr import LayerGradCam

    with eval_mode(model):
        attr = LayerGradCam(model, layer).attribute(x, target=list(targets), relu_attributions=True)
        attr = F.interpolate(attr.detach().float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return attr[:, 0].cpu().numpy()


def gradcam_plus_plus(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with eval_mode(model), GradCAMPlusPlus(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(maps, dtype=np.float32)


def saliency(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    from captum.attr import Saliency

    with eval_mode(model):
        attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=list(targets), abs=True)
    return attr.detach().float().amax(dim=1).cpu().numpy()


def attribute(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: list[int],
              method: str = "gradcam") -> np.ndarray:
    """Attribution maps (B, H, W) by ``method`` (see :data:`METHODS`)."""
    fns = {"gradcam": gradcam, "layergradcam": gradcam, "gradcam++": gradcam_plus_plus, "saliency": saliency}
    if method not in fns:
        raise CxrlabError(f"unknown explanation method {method!r}; known: {', '.join(METHODS)}")
    return fns[method](model, layer, x, targets)
