"""Source domain of the CPU LPM's pre-training (a stand-in for ImageNet-21k, which the papers' ViT-B saw; FPT+
paper Sec. IV-A): shapes on smooth noise, some filled with one of eight fine zero-mean textures (periods 2-4,
horizontal, vertical, diagonal, checkerboards; several amplitudes), with dense targets.

It is *not* the fundus grading task of ``synth.py``: no fundus disc, vessels or optic disc, no grades, no counting;
shapes are ellipses of many sizes and contrasts, and the texture set is broader than the one checkerboard of the
target. The LPM learns generic fine-texture features, as a natural-image LPM learns edges and textures.

``texture_batch(batch, size, patch, generator)`` returns images ``(B, 3, S, S)`` (roughly zero mean, unit std),
token targets ``(B, (S/p)^2)`` (texture class of the patch: the textured class covering most of it when it covers
at least a quarter, else 0 = none) and image targets ``(B, T)`` (multi-hot presence of each texture).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch.nn import functional as F

__all__ = ["NUM_TEXTURES", "texture_bank", "texture_batch"]

NUM_TEXTURES = 8  # textured classes 1..8; class 0 = no texture


@lru_cache(maxsize=4)
def texture_bank(size: int) -> torch.Tensor:
    """``(NUM_TEXTURES + 1, S, S)`` zero-mean unit-peak patterns; index 0 is all zeros."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    sign = lambda t: 1.0 - 2.0 * (t % 2).float()  # noqa: E731 (+1/-1 by parity)
    patterns = [
        torch.zeros(size, size),
        sign(y + x),  # checkerboard, period 2
        sign(y),  # horizontal stripes, period 2
        sign(x),  # vertical stripes, period 2
        sign(y // 2 + x // 2),  # checkerboard of 2x2 cells, period 4
        torch.cos(2 * math.pi * (y + x) / 3),  # diagonal, period 3
        torch.cos(2 * math.pi * y / 3),  # horizontal, period 3
        sign(x // 2),  # vertical, period 4
        torch.cos(2 * math.pi * (y - x) / 4),  # anti-diagonal, period 4
    ]
    bank = torch.stack(patterns).float()
    return bank - bank.mean(dim=(1, 2), keepdim=True)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates ``(S, S)`` (float), built once per size (read-only: never modified in place)."""
    return tuple(torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij"))


def _ellipse(size: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean ``(S, S)`` mask of a random rotated ellipse (semi-axes 4-14 % of the side)."""
    u = torch.rand(5, generator=generator)
    cy, cx = (0.1 + 0.8 * u[:2]) * size
    ay, ax = (0.04 + 0.10 * u[2:4]) * size
    theta = float(u[4]) * math.pi
    y, x = _grid(size)
    dy, dx = y - cy, x - cx
    p = dy * math.cos(theta) + dx * math.sin(theta)
    q = -dy * math.sin(theta) + dx * math.cos(theta)
    return (p / ay) ** 2 + (q / ax) ** 2 <= 1.0


def _image(size: int, bank: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One RGB image in [0, 1] and its per-pixel texture class map ``(S, S)``."""
    g = generator
    coarse = torch.randn(1, 3, 5, 5, generator=g)
    img = 0.5 + 0.15 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    classes = torch.zeros(size, size, dtype=torch.long)
    amplitude = 0.02 + 0.10 * float(torch.rand(1, generator=g))
    for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
        mask = _ellipse(size, g)
        img = img + mask * (0.3 * torch.rand(3, 1, 1, generator=g) - 0.15)
        texture = int(torch.randint(0, NUM_TEXTURES + 1, (1,), generator=g))
        classes = torch.where(mask, texture, classes)
    img = img.clamp(0.15, 0.85)
    img = img + amplitude * bank.gather(0, classes[None])  # later shapes replace earlier ones' pattern
    img = img + 0.01 * torch.randn(img.shape, generator=g)
    return img, classes


@torch.no_grad()
def texture_batch(batch: int, size: int, patch: int, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images (B,3,S,S), token targets (B, (S/p)^2) long, image targets (B, NUM_TEXTURES) float)``."""
    bank = texture_bank(size)
    images, maps = zip(*(_image(size, bank, generator) for _ in range(batch)))
    images_t = torch.stack(images)
    images_t = (images_t - images_t.mean(dim=(2, 3), keepdim=True)) / images_t.std(dim=(2, 3), keepdim=True)
    onehot = F.one_hot(torch.stack(maps), NUM_TEXTURES + 1).permute(0, 3, 1, 2).float()  # (B, T+1, S, S)
    cover = F.avg_pool2d(onehot, patch).flatten(2)  # (B, T+1, n) share of each class per patch
    best = cover[:, 1:].max(dim=1)
    tokens = torch.where(best.values >= 0.25, best.indices + 1, torch.zeros_like(best.indices))
    present = (onehot[:, 1:].flatten(2).amax(dim=2) > 0).float()
    return images_t, tokens, present
