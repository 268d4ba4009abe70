"""Tiled inference for full-size polar images (official ``src/model/__init__.py::forward_tile``).

The LR image is covered by ``tile x tile`` windows with stride ``tile - overlap`` (the last window is aligned to the
border); outputs of overlapping windows are averaged (sum / count). Official values: tile 64, overlap
``64 - 32 // s`` in test mode (x2: 48) and 4 during training-time validation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.runtime import bf16_support, compile_inference

__all__ = ["INFERENCE_MODES", "parse_inference_mode", "bf16_native", "set_attention", "for_inference", "tile_starts",
           "tile_corners", "forward_tiled", "dihedral", "realign", "super_resolve", "default_overlap"]


INFERENCE_MODES = {"precision": ("fp32", "bf16"), "attention": ("default", "fused", "materialised"),
                   "compile": ("off", "inductor", "freezing")}


def parse_inference_mode(spec: str) -> dict[str, str]:
    """``precision:attention:compile`` (e.g. ``bf16:fused:freezing``) -> dict; ``eval.py --modes`` and, after
    ``size:overlap:``, ``bench.py --modes``."""
    parts = spec.split(":")
    mode = dict(zip(INFERENCE_MODES, parts))
    if len(parts) != 3 or any(mode[k] not in allowed for k, allowed in INFERENCE_MODES.items()):
        raise ValueError(f"inference mode {spec!r}: expected precision:attention:compile with precision fp32|bf16, "
                         f"attention default|fused|materialised, compile off|inductor|freezing")
    return mode


def bf16_native(device: torch.device) -> bool:
    """bf16 rows are measured only on native bf16 units, as torch reports them (:func:`common.runtime.bf16_support`)."""
    return bf16_support(device) == "native"


def set_attention(model: nn.Module, attention: str) -> int:
    """Switch every timm attention module to the fused (``scaled_dot_product_attention``) or the materialised path;
    ``default`` leaves timm's choice. Returns the number of modules switched."""
    if attention == "default":
        return 0
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for module in modules:
        module.fused_attn = attention == "fused"
    return len(modules)


def for_inference(model: nn.Module, attention: str = "default", compile: str = "off") -> Callable[..., torch.Tensor]:
    """The network with the attention path of a mode and, for ``inductor`` / ``freezing``, compiled for inference
    (:func:`common.runtime.compile_inference`; freezing folds the weights, which then need no grad, as constants)."""
    set_attention(model, attention)
    if compile == "off":
        return model
    model.requires_grad_(False)
    return compile_inference(model, freeze=compile == "freezing")


def default_overlap(scale: int, tile: int = 64) -> int:
    """Official test-mode overlap ``64 - 32 // s`` (for another tile size: ``tile - 32 // s``)."""
    return max(tile - 32 // scale, 0)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``tile`` and stride ``tile - overlap``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_corners(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left LR corners ``(y, x)`` of every tile, in raster order."""
    return [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]


@torch.no_grad()
def forward_tiled(model: nn.Module, lr: torch.Tensor, scale: int, tile: int = 64, overlap: int = 48,
                  batch: int = 16, max_tiles: int | None = None) -> torch.Tensor:
    """``(B, C, h, w)`` LR -> ``(B, C', h*s, w*s)`` by averaging overlapping tile outputs, ``batch`` tiles per
    forward. ``max_tiles`` (benchmarks only): stop after the first ``max_tiles`` tiles of the raster order; the
    full-size output buffers are still allocated, pixels no tile reached stay 0."""
    b, _, h, w = lr.shape
    th, tw = min(tile, h), min(tile, w)
    corners = tile_corners(h, w, tile, overlap)[:max_tiles]
    out = weight = None
    for i in range(0, len(corners), batch):
        chunk = corners[i:i + batch]
        tiles = torch.cat([lr[..., y:y + th, x:x + tw] for y, x in chunk], dim=0)
        pred = model(tiles)
        if out is None:
            out = lr.new_zeros(b, pred.shape[1], h * scale, w * scale)
            weight = lr.new_zeros(1, 1, h * scale, w * scale)
        for j, (y, x) in enumerate(chunk):
            sl = (..., slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[sl] += pred[j * b:(j + 1) * b]
            weight[sl] += 1
    return out / weight.clamp_min(1)


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Transform ``k`` in 0..7 of the 8 flips/transposes of the last two axes (or its inverse)."""
    if inverse:
        x = x.transpose(-2, -1) if k & 4 else x
        x = x.flip(-1) if k & 2 else x
        return x.flip(-2) if k & 1 else x
    x = x.flip(-2) if k & 1 else x
    x = x.flip(-1) if k & 2 else x
    return x.transpose(-2, -1) if k & 4 else x


@torch.no_grad()
def super_resolve(model: nn.Module, lr: torch.Tensor, scale: int, tiled: bool = True, tile: int = 64,
                  overlap: int = 48, self_ensemble: bool = False) -> torch.Tensor:
    """Whole-image or tiled forward, clamped to [0, 1]: ``(B, 1, h, w)`` -> ``(B, 1, h*s, w*s)``. With
    ``self_ensemble`` the mean over the 8 flipped/transposed inputs (outputs transformed back)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        return forward_tiled(model, x, scale, tile, overlap) if tiled else model(x)

    if not self_ensemble:
        return forward(lr).clamp(0, 1)
    outs = [realign(dihedral(forward(dihedral(lr, k)), k, inverse=True), k, scale) for k in range(8)]
    return torch.stack(outs).mean(0).clamp(0, 1)


def realign(sr: torch.Tensor, k: int, scale: int) -> torch.Tensor:
    """Undo the grid offset a flip introduces: LR pixel ``i`` sits on HR pixel ``s*i`` (LR = HR[::s, ::s]), so a
    flipped input's output, flipped back, lands ``s - 1`` HR pixels too far; shift it back (edge pixels repeated)."""
    for axis, flipped in ((-2, k & 1), (-1, k & 2)):
        if flipped and scale > 1:
            body = sr.narrow(axis, scale - 1, sr.shape[axis] - scale + 1)
            edge = sr.narrow(axis, sr.shape[axis] - 1, 1).expand_as(sr.narrow(axis, 0, scale - 1))
            sr = torch.cat([body, edge], dim=axis)
    return sr
