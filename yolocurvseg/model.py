"""Segmenter of YoloCurvSeg (two-stage coarse-to-fine segmenter, paper abstract): a MONAI 2D U-Net and its losses.

The backbone is not public; OURS: MONAI ``UNet`` (residual units), two output classes (background,
curve). Losses: cross-entropy + soft Dice on fully labelled pixels (synthetic pairs, full supervision); partial
cross-entropy (pCE, WSL4MIS) that ignores label 2 for the noisy-skeleton baseline and for the unconfident pixels of
the pseudo-labels in the fine stage (with a Dice term restricted to the confident pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

__all__ = ["SegmenterConfig", "build_model", "masked_ce_dice_loss", "IGNORE"]

IGNORE = 2


@dataclass
class SegmenterConfig:
    """MONAI UNet settings: ``channels`` per level, ``strides`` between levels, residual units per block."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = 1
    dropout: float = 0.0


def build_model(cfg: SegmenterConfig) -> UNet:
    """``(B, 1, H, W) -> (B, 2, H, W)`` logits; H and W must be divisible by ``prod(strides)``."""
    if len(cfg.strides) != len(cfg.channels) - 1:
        raise ValueError(f"model.strides needs len(channels) - 1 = {len(cfg.channels) - 1} entries, "
                         f"got {len(cfg.strides)}")
    return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(cfg.channels),
                strides=tuple(cfg.strides), num_res_units=cfg.num_res_units, dropout=cfg.dropout)


def masked_ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                        ignore_index: int = IGNORE) -> torch.Tensor:
    """CE over labelled pixels (``target != ignore_index``) + ``dice_weight`` * soft Dice of the curve class over the
    same pixels. ``logits`` ``(B, 2, H, W)``, ``target`` ``(B, H, W)`` int64 in {0, 1, ignore_index}.

    With ``dice_weight = 0`` this is the partial cross-entropy (pCE) of WSL4MIS. A batch without labelled pixels
    gives a zero loss that still carries a gradient graph.
    """
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index)
    if dice_weight == 0:
        return ce
    prob = logits.softmax(dim=1)[:, 1]
    fg = (target == 1).float()
    w = valid.float()
    inter = (prob * fg * w).sum()
    denom = (prob * w).sum() + (fg * w).sum()
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + dice_weight * dice
