"""Build classifiers by name; options pass through to the model's factory.

``simple_cnn`` and ``fusion`` are cxrlab's own models; every other name goes
to ``timm.create_model``.  As with timm's ``create_model(name, **kwargs)``,
model options (``model.options`` in the config: ``width``, ``convs``,
``backbones``, or any timm keyword such as ``drop_path_rate``) are handed to
the factory unchanged, so this module lists no model's settings.

``dropout`` is the one option every model shares: ``None`` keeps the model's
own default (0.5 for ``fusion``, 0 elsewhere); a number, ``0.0`` included, is
used as given.

Pretrained weights: ``none`` (random init), ``hub`` (timm download; needs
network or the local cache) or a path to a local ``.safetensors``/``.pth``
file with a state dict, loaded by :mod:`cxrlab.models.pretrained` (the
classifier head is re-initialised when its shape differs, an RGB first
convolution is folded to grey, too few matching tensors is an error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrlab.errors import CxrlabError
from cxrlab.models.pretrained import ALTERNATIVES, load_local_weights

log = logging.getLogger(__name__)

_OWN: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory as ``model.name: <name>`` (a decorator), as timm's ``@register_model``.

    The extension point for a model of cxrlab's own (``docs/extending.md``; timm names need
    none).  The factory takes ``(num_classes, in_chans=1, pretrained=False, **options)`` and
    returns a module giving logits, with timm's ``forward_features`` / ``forward_head(x,
    pre_logits=...)`` / ``get_classifier()`` (and optionally ``cam_layer()``,
    ``head_parameters()``); ``model.options`` reach it unchanged.  Registered names win over timm's.

    Raises:
        KeyError: ``name`` is taken.
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _OWN:
            raise KeyError(f"duplicate model {name!r}")
        _OWN[name] = fn
        return fn

    return add


@register_model("simple_cnn")
def _simple_cnn(num_classes: int, in_chans: int = 1, pretrained: bool = False, **options: Any) -> nn.Module:
    from cxrlab.models.simple_cnn import SimpleCNN

    if pretrained:
        raise CxrlabError("simple_cnn has no hub weights; use model.pretrained=none or a local file")
    return SimpleCNN(num_classes, in_chans=in_chans, **options)


@register_model("fusion")
def _fusion(num_classes: int, in_chans: int = 1, pretrained: bool = False, **options: Any) -> nn.Module:
    from cxrlab.models.fusion import FusionNet

    if "backbones" in options:
        options["backbones"] = tuple(options["backbones"])
    return FusionNet(num_classes, in_chans=in_chans, pretrained=pretrained, **options)


def list_models() -> list[str]:
    """cxrlab's own models; any timm name (``timm.list_models()``) also works."""
    return sorted(_OWN)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters trained alone in phase 1 of two-phase fine-tuning (the model says which)."""
    own = getattr(model, "head_parameters", None)
    params = own() if callable(own) else list(model.get_classifier().parameters())
    if not params:
        raise CxrlabError(f"{type(model).__name__}: the classifier head has no parameters")
    return params


def build_model(name: str, num_classes: int, in_chans: int = 1, pretrained: str = "none",
                dropout: float | None = None, pretrained_strict: bool = True, **options: Any) -> nn.Module:
    """Create a classifier returning logits of shape (B, num_classes).

    Args:
        name: ``simple_cnn``, ``fusion`` or a timm model name.
        pretrained: ``none``, ``hub`` or a local weights file (see :func:`load_local_weights`).
        dropout: rate before the classifier; ``None`` keeps the model's default.
        pretrained_strict: refuse a local file that matches too few of the model's tensors.
        **options: passed to the model's factory unchanged (timm keywords for timm models).

    Raises:
        CxrlabError: unknown name, an option the model does not take, missing or non-matching weights
            file, hub weights that cannot be fetched.
    """
    kwargs = dict(options)
    if name in _OWN:
        if dropout is not None:
            kwargs["dropout"] = dropout
        factory: Callable[..., nn.Module] = _OWN[name]
    else:
        import timm

        if not timm.is_model(name):
            raise CxrlabError(f"unknown model {name!r}: not a cxrlab model ({', '.join(list_models())}) "
                              "nor a timm model name")
        if dropout is not None:
            kwargs["drop_rate"] = dropout
        factory = timm.create_model
        kwargs = {"model_name": name, **kwargs}
    try:
        model = factory(num_classes=num_classes, in_chans=in_chans, pretrained=(pretrained == "hub"), **kwargs)
    except TypeError as e:
        given = ", ".join(sorted(options)) or "none"
        raise CxrlabError(f"model {name!r} does not accept the given options ({given}): {e}") from None
    except ValueError as e:
        raise CxrlabError(f"model {name!r}: {e}") from None
    except OSError as e:  # a hub download that failed (the run's preflight checks the cache and network first)
        if pretrained != "hub":
            raise
        raise CxrlabError(f"model.pretrained=hub: timm's weights for {name} could not be fetched "
                          f"({type(e).__name__}); use {ALTERNATIVES}") from None
    if pretrained not in ("none", "hub"):
        report = load_local_weights(model, Path(pretrained), strict=pretrained_strict)
        log.info("%s", report.text)
    return model


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads: the model's own choice, or timm's last feature stage."""
    own = getattr(model, "cam_layer", None)
    if callable(own):
        return own()
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.info[-1]
        return model.get_submodule(last["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CxrlabError(f"{type(model).__name__}: no convolutional layer for Grad-CAM")
    return convs[-1]


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (B, D): the pooled input of the classifier, before dropout and the head.

    Every cxrlab model follows timm's interface (``forward_features`` then
    ``forward_head(x, pre_logits=True)``), so this is the one place that asks a
    model for them (out-of-distribution scores, embeddings).
    """
    _check_head(model)
    return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)


def logits_and_penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(model(x), penultimate(model, x))`` from one ``forward_features`` pass."""
    _check_head(model)
    f = model.forward_features(x)
    return model.forward_head(f), model.forward_head(f, pre_logits=True).flatten(1)


def _check_head(model: nn.Module) -> None:
    if not callable(getattr(model, "forward_head", None)):
        raise CxrlabError(f"{type(model).__name__}: no forward_head(x, pre_logits=True) for penultimate features")
