"""Losses of JOINEDTrans (JOINED ``Coarse/losses.py::train_DiceLoss_weighted``, ``Coarse/train_smp_y.py::train``).

- Segmentation: soft Dice on sigmoid probabilities per channel (smp ``soft_dice_score``: sums over batch and
  pixels; a channel absent from the whole batch contributes 0), loss = 1/2 (OC + OD); BG is not penalised.
- Heatmap and distance: mean squared error. [ours] ``heatmap_pos_weight`` w > 0 weighs the squared error of the
  pixels inside the target Gaussian (target > 0) by 1 + w: at CPU scale (a few hundred steps) the plain MSE of a
  peak covering ~3 % of the map drifts towards an all-zero map; 0 = JOINED.
- Curriculum (JOINED: epochs [1, 50) distance only, [50, 100) + heatmap, >= 100 all of 300): phase boundaries at
  fractions ``curriculum`` of the schedule. A phase whose terms are all switched off (ablations without the
  distance or heatmap branch) uses the next phase's terms.
- Not JOINED's two defects: its committed loop overwrites the total with the distance loss alone and calls
  ``optimizer.step()`` in validation; here the total is the curriculum sum and evaluation never steps.
"""

from __future__ import annotations

import torch

__all__ = ["soft_dice_loss", "seg_dice_loss", "fine_dice_loss", "curriculum_terms", "CoarseLoss", "PHASES"]

PHASES = (("distance",), ("distance", "heatmap"), ("distance", "heatmap", "seg"))


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 0.0, eps: float = 1e-7
                   ) -> torch.Tensor:
    """Per-channel ``1 - Dice`` of ``(B, C, H, W)`` probabilities; channels with no positive target in the batch
    give 0 (smp ``DiceLoss(mode="multilabel")``). Returns ``(C,)``."""
    p = pred.flatten(2).transpose(0, 1).flatten(1)  # (C, B*H*W)
    t = target.float().flatten(2).transpose(0, 1).flatten(1)
    inter = (p * t).sum(1)
    card = (p + t).sum(1)
    dice = (2 * inter + smooth) / (card + smooth).clamp_min(eps)
    return (1.0 - dice) * (t.sum(1) > 0).float()


def seg_dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coarse segmentation loss: 1/2 (Dice loss OC + Dice loss OD) of ``(B, 3, H, W)`` [OC, OD, BG]."""
    per_channel = soft_dice_loss(pred[:, :2], target[:, :2])
    return 0.5 * (per_channel[0] + per_channel[1])


def fine_dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fine-stage loss (JOINED ``Fine/losses.py``): Dice loss on mean(OC, OD) -- the same 1/2 (OC + OD) sum."""
    return seg_dice_loss(pred, target)


def curriculum_terms(step: int, total_steps: int, curriculum: tuple[float, float], enabled: set[str]
                     ) -> tuple[str, ...]:
    """Loss terms active at ``step`` (0-based) of ``total_steps``: distance, + heatmap, + seg (see module doc)."""
    a, b = curriculum
    frac = step / max(total_steps, 1)
    phase = 0 if frac < a else (1 if frac < b else 2)
    for terms in PHASES[phase:]:
        active = tuple(t for t in terms if t in enabled)
        if active:
            return active
    raise ValueError(f"no loss term enabled (enabled branches: {sorted(enabled)})")


class CoarseLoss:
    """Curriculum sum of the coarse losses. ``__call__(outputs, batch, step, total_steps)`` -> ``(loss, parts)``,
    ``parts`` holding every term (active or not, detached) for logging."""

    def __init__(self, curriculum: tuple[float, float], heatmap: bool = True, distance: bool = True,
                 heatmap_pos_weight: float = 0.0):
        self.curriculum = tuple(curriculum)
        self.heatmap_pos_weight = float(heatmap_pos_weight)
        self.enabled = {"seg"} | ({"heatmap"} if heatmap else set()) | ({"distance"} if distance else set())

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], step: int,
                 total_steps: int) -> tuple[torch.Tensor, dict[str, float]]:
        terms = {"seg": seg_dice_loss(outputs["seg"], batch["seg"])}
        if "heatmap" in self.enabled:
            err = (outputs["heatmap"] - batch["heatmap"]) ** 2
            if self.heatmap_pos_weight > 0:
                err = err * (1.0 + self.heatmap_pos_weight * (batch["heatmap"] > 0).float())
            terms["heatmap"] = torch.mean(err)
        if "distance" in self.enabled:
            terms["distance"] = torch.mean((outputs["distance"] - batch["distance"]) ** 2)
        active = curriculum_terms(step, total_steps, self.curriculum, self.enabled)
        total = sum(terms[name] for name in active)
        return total, {name: float(value.detach()) for name, value in terms.items()}
