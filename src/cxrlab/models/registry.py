"""Build classifiers by name and find their Grad-CAM layer.

``simple_cnn`` is cxrlab's own baseline; every other name goes to
``timm.create_model``.  Pretrained weights: ``none`` (random init), ``hub``
(timm download; needs network) or a path to a local ``.safetensors``/``.pth``
file with a backbone state dict (the classifier head is re-initialised when
its shape differs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cxrlab.errors import CxrlabError
from cxrlab.models.fusion import DEFAULT_BACKBONES
from cxrlab.models.simple_cnn import SimpleCNN

_OWN: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _OWN:
            raise KeyError(f"duplicate model {name!r}")
        _OWN[name] = fn
        return fn

    return add


@register_model("simple_cnn")
def _simple_cnn(num_classes: int, in_chans: int, dropout: float, width: int, convs: int = 2,
                **_: object) -> nn.Module:
    return SimpleCNN(num_classes, in_chans=in_chans, width=width, convs=convs, dropout=dropout)


@register_model("fusion")
def _fusion(num_classes: int, in_chans: int, dropout: float, pretrained: bool = False,
            backbones: tuple[str, str] = DEFAULT_BACKBONES, **_: object) -> nn.Module:
    from cxrlab.models.fusion import FusionNet

    return FusionNet(num_classes, in_chans=in_chans, backbones=tuple(backbones), dropout=dropout or 0.5,
                     pretrained=pretrained)


def list_models() -> list[str]:
    """cxrlab's own models; any timm name (``timm.list_models()``) also works."""
    return sorted(_OWN)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the classifier head (trained alone in phase 1 of two-phase fine-tuning)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module) or not list(head.parameters()):
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None or not list(head.parameters()):
        raise CxrlabError(f"{type(model).__name__}: cannot find the classifier head")
    params = list(head.parameters())
    if hasattr(model, "proj_a"):  # FusionNet: the fusion block counts as head
        params = [p for n, p in model.named_parameters() if not n.startswith("backbone_")]
    return params


def _load_local_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise CxrlabError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CxrlabError(f"{path}: no tensor matches the model's parameters (wrong architecture?)")
    model.load_state_dict(usable, strict=False)


def build_model(name: str, num_classes: int, in_chans: int = 1, pretrained: str = "none",
                dropout: float = 0.0, width: int = 32, convs: int = 2,
                backbones: tuple[str, str] = DEFAULT_BACKBONES) -> nn.Module:
    """Create a classifier returning logits of shape (B, num_classes)."""
    if name in _OWN:
        model = _OWN[name](num_classes=num_classes, in_chans=in_chans, dropout=dropout, width=width,
                           convs=convs, pretrained=(pretrained == "hub"), backbones=backbones)
    else:
        import timm

        if not timm.is_model(name):
            raise CxrlabError(f"unknown model {name!r}: not a cxrlab model ({', '.join(list_models())}) "
                              "nor a timm model name")
        model = timm.create_model(name, pretrained=(pretrained == "hub"), num_classes=num_classes,
                                  in_chans=in_chans, drop_rate=dropout)
    if pretrained not in ("none", "hub"):
        _load_local_weights(model, Path(pretrained))
    return model


def cam_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block, where Grad-CAM is computed."""
    if isinstance(model, SimpleCNN):
        return model.features[-1]
    if hasattr(model, "proj_a"):  # FusionNet: the DenseNet branch's projection
        return model.proj_a
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.info[-1]
        return model.get_submodule(last["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CxrlabError(f"{type(model).__name__}: no convolutional layer for Grad-CAM")
    return convs[-1]
