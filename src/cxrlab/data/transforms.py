"""Batched tensor transforms: augmentation and normalisation on the device.

Augmentation works on a whole batch at once (one ``affine_grid`` +
``grid_sample``), drawn from an explicit ``torch.Generator`` so the same seed
gives the same batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Normalisation for 1-channel inputs (mean/std of grey ImageNet, as timm's 1-ch adaptation assumes).
GRAY_MEAN, GRAY_STD = 0.449, 0.226


def to_float(batch_u8: torch.Tensor, in_chans: int = 1, mean: float = GRAY_MEAN,
             std: float = GRAY_STD) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, C, H, W)."""
    x = batch_u8.unsqueeze(1).float().div_(255.0)
    x = (x - mean) / std
    return x.expand(-1, in_chans, -1, -1) if in_chans > 1 else x


def augment(x: torch.Tensor, gen: torch.Generator, shift: float = 0.04, zoom: float = 0.06,
            rotate_deg: float = 5.0, intensity: float = 0.1) -> torch.Tensor:
    """Random small affine (shift, zoom, rotation) and brightness/contrast per image."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) * (hi - lo) + lo

    scale = u(1 - zoom, 1 + zoom)
    ang = torch.deg2rad(u(-rotate_deg, rotate_deg))
    tx, ty = u(-shift, shift) * 2, u(-shift, shift) * 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = u(1 - intensity, 1 + intensity).view(b, 1, 1, 1).to(x)
    bright = u(-intensity, intensity).view(b, 1, 1, 1).to(x)
    return x * contrast + bright
