"""Batched tensor transforms: augmentation and normalisation on the training device.

Augmentation works on a whole batch at once (one ``affine_grid`` +
``grid_sample`` for flip, rotation, zoom, shift and random resized crop; two
broadcast ops for brightness and contrast), drawn from an explicit
``torch.Generator``: the same seed gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Normalisation for 1-channel inputs (mean/std of grey ImageNet, as timm's 1-ch adaptation assumes).
GRAY_MEAN, GRAY_STD = 0.449, 0.226
#: ImageNet's per-channel (RGB) statistics, for 3-channel weights pretrained on ImageNet.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: A normalisation value: one for every channel, or one per channel.
Norm = float | tuple[float, ...]


@dataclass(frozen=True)
class Augment:
    """Ranges of the random batch transforms; 0 (or False, or crop_scale 1) turns one off."""

    hflip: bool = False
    rotate_deg: float = 10.0
    zoom: float = 0.1
    shift: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    crop_scale: float = 1.0  # random resized crop: minimum kept area fraction


def to_float(batch_u8: torch.Tensor, in_chans: int = 1, mean: Norm = GRAY_MEAN,
             std: Norm = GRAY_STD) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, C, H, W): ``(x / 255 - mean) / std``.

    One ``mean``/``std`` for all channels expands the grey channel without copying;
    per-channel values (e.g. ImageNet's RGB triple for 3-channel weights) give C real channels.
    """
    x = batch_u8.unsqueeze(1).float()
    if not isinstance(mean, tuple) and not isinstance(std, tuple):
        x.mul_(1.0 / (255.0 * std)).sub_(mean / std)  # one pass each, in place
        return x.expand(-1, in_chans, -1, -1) if in_chans > 1 else x
    m = torch.tensor(mean if isinstance(mean, tuple) else (mean,) * in_chans, dtype=x.dtype, device=x.device)
    s = torch.tensor(std if isinstance(std, tuple) else (std,) * in_chans, dtype=x.dtype, device=x.device)
    if m.numel() != in_chans or s.numel() != in_chans:
        raise ValueError(f"normalisation has {m.numel()} means and {s.numel()} stds for {in_chans} channels")
    scale, shift = (1.0 / (255.0 * s)).view(1, -1, 1, 1), (m / s).view(1, -1, 1, 1)
    return x.expand(-1, in_chans, -1, -1) * scale - shift


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sampling grid (B, H, W, 2) of ``F.affine_grid(theta, align_corners=False)``, by broadcasting.

    Same result as torch's, which does a batched matmul over every pixel and is
    ~10x slower on a CPU.
    """
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    grid = torch.empty((theta.shape[0], h, w, 2), dtype=theta.dtype, device=theta.device)
    for k in range(2):  # (B, H, 1) row term + (B, 1, W) column term, written straight into the grid
        torch.add(t[:, k, 1] * ys[:, None] + t[:, k, 2], t[:, k, 0] * xs, out=grid[..., k])
    return grid


def augment(x: torch.Tensor, gen: torch.Generator, a: Augment = Augment()) -> torch.Tensor:
    """Random affine (flip, rotation, zoom, shift, resized crop) and brightness/contrast per image."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) * (hi - lo) + lo

    scale = u(1 - a.zoom, 1 + a.zoom)
    if a.crop_scale < 1.0:  # keep a random square of area in [crop_scale, 1] and blow it up
        scale = scale / torch.sqrt(u(a.crop_scale, 1.0))
    ang = torch.deg2rad(u(-a.rotate_deg, a.rotate_deg))
    # translation range grows with the zoom so a crop can sit anywhere inside the image
    room = (1 - 1 / scale).clamp(min=0)
    tx = u(-1, 1) * (2 * a.shift + room)
    ty = u(-1, 1) * (2 * a.shift + room)
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if a.hflip else torch.ones(b)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = affine_grid(theta.to(x), x.shape[-2], x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = u(1 - a.contrast, 1 + a.contrast).view(b, 1, 1, 1).to(x)
    bright = u(-a.brightness, a.brightness).view(b, 1, 1, 1).to(x)
    return x.mul_(contrast).add_(bright)  # grid_sample returned a new tensor
