"""SwinIR-M with the PAMSR 1->3 / 3->1 adapter convolutions (paper: "Transformer-based network with a global
receptive field"; official code ``src/model/swinir.py::make_model``).

Structure (names follow the SwinIR reference implementation so its weights load by key):

``conv_first_0`` (1->3 adapter) -> ``conv_first`` (3->C) -> ``patch_embed.norm`` -> RSTB x N -> ``norm`` ->
``conv_after_body`` (+ long skip) -> ``conv_before_upsample`` -> ``upsample`` (conv + PixelShuffle) ->
``conv_last`` (64->3) -> ``conv_final`` (3->1 adapter).

A residual Swin Transformer block (RSTB) is ``depth`` Swin transformer layers (timm ``SwinTransformerBlock``:
W-MSA / SW-MSA with relative position bias, shift = window // 2 on odd layers, MLP ratio 2) followed by a 3x3
conv and a residual connection. The official configuration (embed 180, depths 6x6, heads 6x6, window 8) has
11,752,545 parameters at x2, 11,900,257 at x4 and 12,047,969 at x8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from pamsr.models.upsampling import Upsample, add_bicubic_skip, zero_init

__all__ = ["SwinIR", "RSTB", "Upsample", "swinir_m"]


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``depth`` STLs + 3x3 conv + skip. Input/output ``(B, H, W, C)``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], img_size: int, qkv_bias: bool = True):
        super().__init__()
        self.residual_group = nn.Module()
        self.residual_group.blocks = nn.ModuleList([
            SwinTransformerBlock(dim=dim, input_resolution=(img_size, img_size), num_heads=num_heads,
                                 window_size=window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                                 dynamic_mask=True, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                 drop_path=float(drop_path[i]))
            for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``; H and W are multiples of the window size."""
        y = x
        for block in self.residual_group.blocks:
            y = block(y)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return y + x


class SwinIR(nn.Module):
    """SwinIR (classical SR, pixel-shuffle) with PAMSR's input/output adapter convolutions.

    Input ``(B, in_chans, h, w)`` in [0, 1]; output ``(B, out_chans, h*s, w*s)``. Any h, w: the input is reflect-
    padded to a multiple of ``window_size`` and the output cropped back.
    """

    def __init__(self, upscale: int = 2, in_chans: int = 1, adapter_chans: int = 3, out_chans: int = 1,
                 img_size: int = 64, embed_dim: int = 180, depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6), window_size: int = 8, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.1, patch_norm: bool = True, num_feat: int = 64,
                 img_range: float = 1.0, bicubic_skip: bool = False, skip_zero: str = "final"):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if embed_dim % max(num_heads) != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by every entry of num_heads {list(num_heads)}")
        if adapter_chans < 0:
            raise ValueError(f"adapter_chans must be >= 0 (0 = no adapter convolutions), got {adapter_chans}")
        self.upscale, self.window_size, self.img_range = upscale, window_size, img_range
        # adapter_chans 0 (ours): no 1->3 / 3->1 adapters, conv_first reads the LR and conv_last writes the output
        inner_in, inner_out = (adapter_chans, adapter_chans) if adapter_chans else (in_chans, out_chans)
        self.conv_first_0 = nn.Conv2d(in_chans, adapter_chans, 3, 1, 1) if adapter_chans else nn.Identity()
        self.conv_first = nn.Conv2d(inner_in, embed_dim, 3, 1, 1)
        self.patch_embed = nn.Module()
        self.patch_embed.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        n_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # linear (python: meta-safe)
        self.layers = nn.ModuleList()
        start = 0
        for depth, heads in zip(depths, num_heads):
            self.layers.append(RSTB(embed_dim, depth, heads, window_size, mlp_ratio, dpr[start:start + depth],
                                    img_size, qkv_bias))
            start += depth
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, inner_out, 3, 1, 1)
        self.conv_final = nn.Conv2d(adapter_chans, out_chans, 3, 1, 1) if adapter_chans else nn.Identity()
        self.apply(self._init_weights)
        self.bicubic_skip = bicubic_skip
        if skip_zero not in ("final", "last"):
            raise ValueError(f"skip_zero must be 'final' or 'last', got {skip_zero!r}")
        if bicubic_skip:  # untrained network = bicubic; "last": the 3->1 adapter stays random (ours)
            zero_init(self.conv_final if skip_zero == "final" and adapter_chans else self.conv_last)
            if skip_zero == "last" and adapter_chans:
                nn.init.zeros_(self.conv_final.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)`` through the RSTB stack (tokens kept as ``(B, H, W, C)``)."""
        x = self.patch_embed.norm(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, h, w)`` LR in [0, 1] -> ``(B, 1, h*s, w*s)`` SR (not clamped)."""
        h, w = x.shape[-2:]
        lr = x
        pad_h, pad_w = (-h) % self.window_size, (-w) % self.window_size
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        x = self.conv_first(self.conv_first_0(x * self.img_range))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = self.conv_final(x) / self.img_range
        return add_bicubic_skip(x[..., : h * self.upscale, : w * self.upscale], lr, self.upscale, self.bicubic_skip)


def swinir_m(upscale: int, **kwargs) -> SwinIR:
    """The official PAMSR configuration (SwinIR-M: embed 180, 6 RSTBs of depth 6, 6 heads, window 8, MLP 2)."""
    return SwinIR(upscale=upscale, **kwargs)
