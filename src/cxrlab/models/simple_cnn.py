"""A small VGG-style CNN baseline (seeds 002 and 003 compare against one).

A stride-2 stem, then four stages of ``convs`` conv-BN-ReLU layers with
widths ``w, 2w, 4w, 4w`` and max-pooling after the first two stages (total
stride 8, so a 128-px input gives a 16 x 16 Grad-CAM), global pooling
(``global_pool``: ``avg`` by default, ``max`` for small lesions that average
pooling dilutes, or ``avgmax``, their mean as in timm), dropout and a linear head.  :meth:`SimpleCNN.cam_layer` is the last conv stage;
``forward_features`` / ``forward_head(x, pre_logits=True)`` follow timm's interface.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 1, width: int = 32, convs: int = 2,
                 dropout: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        pools = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
        if global_pool not in (*pools, "avgmax"):
            raise ValueError(f"simple_cnn global_pool must be avg, max or avgmax, got {global_pool!r}")
        w = width
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_chans, w, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(w), nn.ReLU(inplace=True)),
            _stage(w, w, convs), nn.MaxPool2d(2),
            _stage(w, 2 * w, convs), nn.MaxPool2d(2),
            _stage(2 * w, 4 * w, convs),
            _stage(4 * w, 4 * w, convs),
        )
        self.global_pool = global_pool
        self.pool = pools.get(global_pool, nn.AdaptiveAvgPool2d)(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1) if global_pool == "avgmax" else None
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * w, num_classes)

    def cam_layer(self) -> nn.Module:
        """The last convolutional stage (Grad-CAM target)."""
        return self.features[-1]

    def get_classifier(self) -> nn.Module:
        return self.head

    def head_parameters(self) -> list[nn.Parameter]:
        """What trains in the frozen phase of two-phase fine-tuning."""
        return list(self.head.parameters())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, 4w, H/8, W/8), as timm's ``forward_features``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a feature map; with ``pre_logits`` the pooled (B, 4w) features, else the logits."""
        pooled = self.pool(x)
        if self.max_pool is not None:
            pooled = 0.5 * (pooled + self.max_pool(x))
        x = pooled.flatten(1)
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
