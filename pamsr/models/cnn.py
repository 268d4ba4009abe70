"""CNN baselines of the paper's comparison (official code ``src/model/edsr.py``, ``rcan.py``, presets in
``src/template.py``) and the bicubic interpolation baseline, all single-channel.

- EDSR (Lim et al. 2017): conv head, ``n_resblocks`` residual blocks (conv-ReLU-conv, scaled by ``res_scale``),
  conv + global skip, pixel-shuffle tail. Baseline size 16x64 (res_scale 1), paper size 32x256 (res_scale 0.1).
- RCAN (Zhang et al. 2018): ``n_resgroups`` residual groups of ``n_resblocks`` residual channel-attention blocks.
- Bicubic: upsampling aligned to the decimation grid (LR pixel i sits on HR pixel s*i, because LR = HR[::s, ::s]).
"""

from __future__ import annotations

import torch
from torch import nn

from pamsr.models.upsampling import Upsample, add_bicubic_skip, bicubic_upsample, zero_init

__all__ = ["EDSR", "RCAN", "ResidualGroup", "Bicubic", "bicubic_upsample"]


class _ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(n_feats, n_feats, 3, 1, 1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR for one channel: ``(B, 1, h, w)`` -> ``(B, 1, h*s, w*s)``."""

    def __init__(self, upscale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 in_chans: int = 1, out_chans: int = 1, bicubic_skip: bool = False):
        super().__init__()
        self.upscale, self.bicubic_skip = upscale, bicubic_skip
        self.head = nn.Conv2d(in_chans, n_feats, 3, 1, 1)
        self.body = nn.Sequential(*[_ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, 1, 1))
        self.tail = nn.Sequential(Upsample(upscale, n_feats), nn.Conv2d(n_feats, out_chans, 3, 1, 1))
        if bicubic_skip:
            zero_init(self.tail[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return add_bicubic_skip(self.tail(self.body(f) + f), x, self.upscale, self.bicubic_skip)


class _ChannelAttention(nn.Module):
    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(n_feats, n_feats // reduction, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(n_feats // reduction, n_feats, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class _RCAB(nn.Module):
    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(n_feats, n_feats, 3, 1, 1), _ChannelAttention(n_feats, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, n_resblocks: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(*[_RCAB(n_feats, reduction) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """RCAN for one channel: ``(B, 1, h, w)`` -> ``(B, 1, h*s, w*s)``."""

    def __init__(self, upscale: int = 2, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, in_chans: int = 1, out_chans: int = 1, bicubic_skip: bool = False):
        super().__init__()
        self.upscale, self.bicubic_skip = upscale, bicubic_skip
        self.head = nn.Conv2d(in_chans, n_feats, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualGroup(n_feats, n_resblocks, reduction) for _ in range(n_resgroups)],
                                  nn.Conv2d(n_feats, n_feats, 3, 1, 1))
        self.tail = nn.Sequential(Upsample(upscale, n_feats), nn.Conv2d(n_feats, out_chans, 3, 1, 1))
        if bicubic_skip:
            zero_init(self.tail[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return add_bicubic_skip(self.tail(self.body(f) + f), x, self.upscale, self.bicubic_skip)


class Bicubic(nn.Module):
    """Parameter-free baseline module (one dummy buffer so ``.to(device)`` works)."""

    def __init__(self, upscale: int = 2):
        super().__init__()
        self.upscale = upscale
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upsample(x, self.upscale)
