"""A small VGG-style CNN baseline (seeds 002 and 003 compare against one).

A stride-2 stem, then four stages of ``convs`` conv-BN-ReLU layers with
widths ``w, 2w, 4w, 4w`` and max-pooling after the first two stages (total
stride 8, so a 128-px input gives a 16 x 16 Grad-CAM), global average pooling,
dropout and a linear head.  ``features[-1]`` is the last conv stage, the
Grad-CAM target layer.
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
                 dropout: float = 0.0):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_chans, w, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(w), nn.ReLU(inplace=True)),
            _stage(w, w, convs), nn.MaxPool2d(2),
            _stage(w, 2 * w, convs), nn.MaxPool2d(2),
            _stage(2 * w, 4 * w, convs),
            _stage(4 * w, 4 * w, convs),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.drop(x))
