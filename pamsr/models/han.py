"""HAN (Niu et al. 2020, holistic attention network; official ``src/model/han.py``, preset ``han_x2``), single-channel.

An RCAN backbone (``n_resgroups`` residual groups of ``n_resblocks`` residual channel-attention blocks) whose group
outputs are re-weighted by the layer attention module (LAM: softmax over the correlations between the group
outputs) and whose last features pass the channel-spatial attention module (CSAM: a 3D convolution over
(channel, row, column) gives a sigmoid attention map); both are added to the backbone output, each with a learnt
scale initialised at 0 (so the untrained network is RCAN).
"""

from __future__ import annotations

import torch
from torch import nn

from pamsr.models.cnn import ResidualGroup
from pamsr.models.upsampling import Upsample, add_bicubic_skip, zero_init

__all__ = ["HAN", "LayerAttention", "ChannelSpatialAttention"]


class LayerAttention(nn.Module):
    """``(B, N, C, H, W)`` group outputs -> ``(B, N*C, H, W)``: each re-weighted by softmax(F F^T) over groups."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = feats.shape
        flat = feats.reshape(b, n, -1)
        attention = torch.softmax(flat @ flat.transpose(1, 2), dim=-1)
        out = self.scale * (attention @ flat).reshape(b, n, c, h, w) + feats
        return out.reshape(b, n * c, h, w)


class ChannelSpatialAttention(nn.Module):
    """``(B, C, H, W)`` -> same: ``x * scale * sigmoid(conv3d(x)) + x``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.conv(x.unsqueeze(1))).squeeze(1)
        return self.scale * attention * x + x


class HAN(nn.Module):
    """HAN for one channel: ``(B, 1, h, w)`` -> ``(B, 1, h*s, w*s)``."""

    def __init__(self, upscale: int = 2, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, in_chans: int = 1, out_chans: int = 1, bicubic_skip: bool = False):
        super().__init__()
        self.upscale, self.bicubic_skip = upscale, bicubic_skip
        self.head = nn.Conv2d(in_chans, n_feats, 3, 1, 1)
        self.groups = nn.ModuleList([ResidualGroup(n_feats, n_resblocks, reduction) for _ in range(n_resgroups)])
        self.body_tail = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.lam, self.csam = LayerAttention(), ChannelSpatialAttention()
        self.last_conv = nn.Conv2d(n_feats * n_resgroups, n_feats, 3, 1, 1)
        self.last = nn.Conv2d(n_feats * 2, n_feats, 3, 1, 1)
        self.tail = nn.Sequential(Upsample(upscale, n_feats), nn.Conv2d(n_feats, out_chans, 3, 1, 1))
        if bicubic_skip:
            zero_init(self.tail[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = head = self.head(x)
        outs = []
        for group in self.groups:
            f = group(f)
            outs.append(f)
        f = self.body_tail(f)
        lam = self.last_conv(self.lam(torch.stack(outs, 1)))
        res = self.last(torch.cat([self.csam(f), lam], 1)) + head
        return add_bicubic_skip(self.tail(res), x, self.upscale, self.bicubic_skip)
