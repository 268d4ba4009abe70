"""Dense-connection baselines that the official code ships presets for (``src/template.py``: ``rdn_x2``,
``FD_Unet_x2``), single-channel.

- RDN (Zhang et al. 2018, residual dense network; official ``src/model/rdn.py``): shallow features, ``n_blocks``
  residual dense blocks of ``n_layers`` densely connected 3x3 conv + ReLU (growth ``growth``) with 1x1 local fusion
  and a local residual, 1x1 + 3x3 global fusion of all blocks, global residual, pixel-shuffle upsampling.
  Paper configuration (B): 16 blocks, 8 layers, growth 64, 64 features.
- FD-UNet (Guan et al. 2019, fully dense U-Net for photoacoustic artefact removal; official ``src/model/fd_unet.py``
  with ``padding_zero``): the input is the LR placed on the HR grid with zeros in between (LR pixel ``i`` on HR
  pixel ``s*i``, as the decimation samples it); a U-Net whose every level is a dense block, with a residual to its
  input. ``features`` at the first level, doubled per level over ``levels`` levels.
"""

from __future__ import annotations

import torch
from torch import nn

from pamsr.models.upsampling import Upsample, add_bicubic_skip, bicubic_upsample, zero_init

__all__ = ["RDN", "FDUNet", "zero_fill"]


class _DenseBlock(nn.Module):
    """``layers`` densely connected ``conv3x3 + ReLU`` (each adds ``growth`` channels), 1x1 fusion to ``out``."""

    def __init__(self, channels: int, growth: int, layers: int, out: int, residual: bool):
        super().__init__()
        self.convs = nn.ModuleList([nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, 1, 1),
                                                  nn.ReLU(inplace=True)) for i in range(layers)])
        self.fuse = nn.Conv2d(channels + layers * growth, out, 1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(conv(torch.cat(feats, 1)))
        y = self.fuse(torch.cat(feats, 1))
        return x + y if self.residual else y


class RDN(nn.Module):
    """RDN for one channel: ``(B, 1, h, w)`` -> ``(B, 1, h*s, w*s)``."""

    def __init__(self, upscale: int = 2, n_blocks: int = 16, n_layers: int = 8, growth: int = 64, features: int = 64,
                 in_chans: int = 1, out_chans: int = 1, bicubic_skip: bool = False):
        super().__init__()
        self.upscale, self.bicubic_skip = upscale, bicubic_skip
        self.sfe1 = nn.Conv2d(in_chans, features, 3, 1, 1)
        self.sfe2 = nn.Conv2d(features, features, 3, 1, 1)
        self.blocks = nn.ModuleList([_DenseBlock(features, growth, n_layers, features, residual=True)
                                     for _ in range(n_blocks)])
        self.gff = nn.Sequential(nn.Conv2d(n_blocks * features, features, 1), nn.Conv2d(features, features, 3, 1, 1))
        self.tail = nn.Sequential(Upsample(upscale, features), nn.Conv2d(features, out_chans, 3, 1, 1))
        if bicubic_skip:
            zero_init(self.tail[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.sfe1(x)
        f = self.sfe2(f1)
        outs = []
        for block in self.blocks:
            f = block(f)
            outs.append(f)
        out = self.tail(self.gff(torch.cat(outs, 1)) + f1)
        return add_bicubic_skip(out, x, self.upscale, self.bicubic_skip)


def zero_fill(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C, h*s, w*s)`` with LR pixel ``(i, j)`` on HR pixel ``(s*i, s*j)``, zeros elsewhere."""
    b, c, h, w = lr.shape
    out = lr.new_zeros(b, c, h * scale, w * scale)
    out[..., ::scale, ::scale] = lr
    return out


class FDUNet(nn.Module):
    """FD-UNet on the zero-filled HR grid: ``(B, 1, h, w)`` LR -> ``(B, 1, h*s, w*s)``. Needs ``h*s`` and ``w*s``
    divisible by ``2**(levels-1)`` (the input is replicate-padded to that and cropped back)."""

    def __init__(self, upscale: int = 2, features: int = 32, levels: int = 4, layers: int = 4, in_chans: int = 1,
                 out_chans: int = 1, bicubic_skip: bool = False):
        super().__init__()
        self.upscale, self.levels, self.bicubic_skip = upscale, levels, bicubic_skip
        widths = [features * 2 ** i for i in range(levels)]
        self.head = nn.Conv2d(in_chans, widths[0], 3, 1, 1)
        self.down = nn.ModuleList([_DenseBlock(w, w // layers, layers, w, residual=False) for w in widths])
        self.pool = nn.ModuleList([nn.Conv2d(w, 2 * w, 3, 2, 1) for w in widths[:-1]])
        self.upconv = nn.ModuleList([nn.ConvTranspose2d(2 * w, w, 2, 2) for w in widths[:-1]])
        self.up = nn.ModuleList([_DenseBlock(2 * w, w // layers, layers, w, residual=False) for w in widths[:-1]])
        self.last = nn.Conv2d(widths[0], out_chans, 1)
        if bicubic_skip:
            zero_init(self.last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = bicubic_upsample(x, self.upscale) if self.bicubic_skip else zero_fill(x, self.upscale)
        h, w = base.shape[-2:]
        m = 2 ** (self.levels - 1)
        f = nn.functional.pad(zero_fill(x, self.upscale), (0, (-w) % m, 0, (-h) % m), mode="replicate")
        f = self.head(f)
        skips = []
        for i, block in enumerate(self.down):
            f = block(f)
            if i < len(self.pool):
                skips.append(f)
                f = self.pool[i](f)
        for i in reversed(range(len(self.up))):
            f = self.up[i](torch.cat([self.upconv[i](f), skips[i]], 1))
        return self.last(f)[..., :h, :w] + base
