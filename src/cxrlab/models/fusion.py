"""DenseNet-121 + EfficientNet-B3 cross-attention fusion (the project report "Chest X-Ray Image
Classification using Deep Learning approach").

Both backbones (timm, ``features_only``) see the same image; the last feature
map of each is projected by a 1x1 convolution to ``dim`` (256) channels.  Each
branch's tokens then attend to the other's (multi-head cross-attention with a
residual connection), the two attended maps are concatenated, layer-normed,
globally average-pooled, passed through dropout (0.5) and a linear head.
If the two maps differ in size, the second is resized to the first.
``backbone_options`` passes timm keywords to each backbone (e.g. a small DenseNet's
``growth_rate`` / ``block_config`` for a quick run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_BACKBONES: tuple[str, str] = ("densenet121", "efficientnet_b3")


class FusionNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 1, backbones: tuple[str, str] = DEFAULT_BACKBONES,
                 dim: int = 256, heads: int = 4, dropout: float = 0.5, pretrained: bool = False,
                 backbone_options: tuple[dict, dict] = ({}, {})):
        super().__init__()
        import timm

        if len(backbones) != 2 or len(backbone_options) != 2:
            raise ValueError("fusion needs two backbones and two backbone_options mappings")
        self.backbone_a = timm.create_model(backbones[0], features_only=True, out_indices=(-1,),
                                            in_chans=in_chans, pretrained=pretrained, **backbone_options[0])
        self.backbone_b = timm.create_model(backbones[1], features_only=True, out_indices=(-1,),
                                            in_chans=in_chans, pretrained=pretrained, **backbone_options[1])
        ca = self.backbone_a.feature_info.channels()[-1]
        cb = self.backbone_b.feature_info.channels()[-1]
        self.proj_a = nn.Conv2d(ca, dim, 1)
        self.proj_b = nn.Conv2d(cb, dim, 1)
        self.attn_ab = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_ba = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(2 * dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * dim, num_classes)

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: the DenseNet branch's projection (the map the attention reads)."""
        return self.proj_a

    def get_classifier(self) -> nn.Module:
        return self.head

    def head_parameters(self) -> list[nn.Parameter]:
        """The fusion block and the head: everything except the two pretrained backbones."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone_")]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The fused, layer-normed tokens (B, HW, 2 * dim), as timm's ``forward_features``."""
        fa = self.proj_a(self.backbone_a(x)[-1])
        fb = self.proj_b(self.backbone_b(x)[-1])
        if fb.shape[-2:] != fa.shape[-2:]:
            fb = F.interpolate(fb, size=fa.shape[-2:], mode="bilinear", align_corners=False)
        ta, tb = fa.flatten(2).transpose(1, 2), fb.flatten(2).transpose(1, 2)  # (B, HW, dim)
        ta = ta + self.attn_ab(ta, tb, tb, need_weights=False)[0]
        tb = tb + self.attn_ba(tb, ta, ta, need_weights=False)[0]
        return self.norm(torch.cat([ta, tb], dim=-1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens; with ``pre_logits`` the pooled (B, 2 * dim) features, else the logits."""
        fused = x.mean(dim=1)
        return fused if pre_logits else self.head(self.drop(fused))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
