"""Upsampling pieces shared by the networks: the pixel-shuffle upsampler (SwinIR / EDSR / RCAN tails), bicubic
interpolation aligned to the decimation grid, and the optional bicubic skip (``model.bicubic_skip``, our deviation:
the network predicts a residual on top of bicubic(LR), its last convolution zero-initialised, so training starts
from bicubic instead of from noise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Upsample", "bicubic_upsample", "zero_init", "add_bicubic_skip"]


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: ``[conv(F, 4F) + PixelShuffle(2)] x log2(s)`` or ``conv(F, 9F) + PixelShuffle(3)``."""

    def __init__(self, scale: int, num_feat: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported; use 2, 3, 4 or 8")
        super().__init__(*layers)



def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C, h*s, w*s)`` bicubic, with LR pixel ``i`` placed on HR pixel ``s*i``.

    HR pixels beyond the last LR sample (the last ``s-1`` rows/columns) use border extension.
    """
    b, c, h, w = lr.shape
    ys = torch.arange(h * scale, dtype=lr.dtype, device=lr.device) / scale
    xs = torch.arange(w * scale, dtype=lr.dtype, device=lr.device) / scale
    gy = 2 * ys / max(h - 1, 1) - 1
    gx = 2 * xs / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0).expand(b, -1, -1, -1)
    return F.grid_sample(lr, grid, mode="bicubic", padding_mode="border", align_corners=True)



def zero_init(conv: nn.Module) -> None:
    """Zero weight and bias of the last convolution: with the bicubic skip the untrained network is bicubic."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def add_bicubic_skip(out: torch.Tensor, lr: torch.Tensor, scale: int, enabled: bool) -> torch.Tensor:
    """``out + bicubic(lr)`` when ``enabled`` (the input channel broadcast over the output channels), else ``out``."""
    return out + bicubic_upsample(lr, scale) if enabled else out
