"""FedLPPA client objective (official ``code_v4/flower_pCE_2D_v4_FedLPPA.py``, ``_train`` of FedUniV2.1):

    L = pCE(main, y) + alpha * L_uni + beta * L_pls      (alpha = 0.1, beta = 0.5)

- ``pCE``: cross entropy on the labelled pixels only (``ignore_index = C``, the unlabelled value of the h5 files).
- ``L_pls``: dual-decoder pseudo-label loss ``1/2 [pDice(main, y_hat) + pDice(aux, y_hat)]`` with
  ``y_hat = argmax(lam * softmax(main) + (1 - lam) * softmax(aux))``, ``lam ~ U(0, 1)`` per iteration, detached.
- ``L_uni``: prompt divergence ``-1/(K-1) sum_{k != own} KLDivLoss(F_own, stopgrad(F_k))`` on the RAW fused features.
  ``torch.nn.functional.kl_div`` treats its input as log-probabilities and computes ``t (log t - x)`` with
  ``xlogy``: since torch 1.13 a negative target gives NaN, and about half of the fused features are negative at
  init. torch 1.10 (the authors' environment) returned 0 for every target <= 0, so ``uni_kl: torch110`` (default)
  computes ``mean(where(t > 0, t (log t - x), 0))`` explicitly. This term is linear in ``F_own`` and unbounded
  below: minimising it pushes ``F_own`` down wherever ``F_k > 0``. ``uni_kl: softmax`` (ours) is the KL of the
  channel-softmax maps, finite for any sign of the features.

The auxiliary-decoder pCE (``aux_pce``) exists in the released script as a commented-out line; off by default.

``beta_rampup`` (ours; 0 = released, a constant beta): beta grows with the sigmoid ramp-up
``exp(-5 (1 - t / T)^2)`` of WSL4MIS / mean teacher (``ramps.sigmoid_rampup``) over the first ``T = beta_rampup``
fraction of the local iterations, so that the pseudo labels of the still untrained decoders of the first rounds
weigh little; see :func:`pls_weight`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from common.runtime import reduce_mean

__all__ = ["LossConfig", "pls_weight", "partial_cross_entropy", "shared_partial_cross_entropy", "partial_dice_loss",
           "kl_div_torch110", "uni_loss", "pseudo_label", "pls_loss", "fedlppa_loss", "LossTerms"]


@dataclass
class LossConfig:
    """Weights and variants of the client objective (module docstring)."""

    alpha: float = 0.1
    beta: float = 0.5
    uni_kl: Literal["torch110", "softmax"] = "torch110"
    aux_pce: bool = False
    gated_crf: bool = False
    beta_rampup: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta_rampup <= 1.0:
            raise ValueError(f"loss.beta_rampup is a fraction of the local iterations in [0, 1] (0 = constant beta, "
                             f"as released), got {self.beta_rampup}")
        if self.gated_crf:
            raise ValueError("loss.gated_crf: the gated CRF loss is instantiated but never called in the released "
                             "FedLPPA script and is not implemented here; set loss.gated_crf=false")


def pls_weight(cfg: LossConfig, t: int, total: int) -> float:
    """Weight of ``L_pls`` at local iteration ``t`` of ``total``: ``beta``, ramped up as in the module docstring."""
    length = cfg.beta_rampup * total
    if length <= 0 or t >= length:
        return cfg.beta
    return cfg.beta * math.exp(-5.0 * (1.0 - max(t, 0) / length) ** 2)


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean CE over pixels whose label != ``ignore_index``; 0 (with a graph) when no pixel is labelled.

    ``logits`` (B, C, H, W), ``target`` (B, H, W) long."""
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def shared_partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """This rank's part of the global batch's pCE under DDP: ``W * (CE summed over the local labelled pixels) /
    (labelled pixels of all W ranks)``. DDP averages the ranks' gradients, so the step follows the gradient of the
    mean CE over every labelled pixel of the global batch, as one process would (the ranks' slices hold different
    numbers of labelled pixels: weak labels, rotated-in corners). Without a process group it is
    :func:`partial_cross_entropy` up to rounding. ``logits`` (B, C, H, W), ``target`` (B, H, W) long."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    total = reduce_mean(float((target != ignore_index).sum())) * world
    if total == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum") * (world / total)


def partial_dice_loss(probs: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """WSL4MIS ``pDLoss``: per class ``1 - (2 sum(p t m) + s) / (sum(p^2 m) + sum(t^2 m) + s)`` over the whole
    batch (m = labelled mask, s = 1e-5), averaged over the C classes. ``probs`` (B, C, H, W), ``target`` (B, H, W)."""
    num_classes = probs.shape[1]
    mask = (target != ignore_index).unsqueeze(1).to(probs.dtype)
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot * mask).sum(dims)
    y_sum = (onehot * onehot * mask).sum(dims)
    z_sum = (probs * probs * mask).sum(dims)
    dice = (2 * inter + 1e-5) / (z_sum + y_sum + 1e-5)
    return (1 - dice).mean()


def kl_div_torch110(inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``KLDivLoss()(inp, target)`` (reduction 'mean') as torch 1.10 computed it: terms with target <= 0 are 0."""
    positive = target > 0
    safe = torch.where(positive, target, torch.ones_like(target))
    return torch.where(positive, target * (safe.log() - inp), torch.zeros_like(inp)).mean()


def _kl_softmax(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(softmax_c(other) || softmax_c(own)), summed over channels, mean over batch and pixels."""
    kl = F.kl_div(F.log_softmax(own, dim=1), F.log_softmax(other, dim=1), reduction="none", log_target=True)
    return kl.sum(dim=1).mean()


def uni_loss(fused: Sequence[torch.Tensor], site: int, kind: str = "torch110") -> torch.Tensor:
    """``L_uni`` of the own fused feature against the detached others; 0 when there is only one site/feature."""
    if len(fused) < 2:
        return fused[0].sum() * 0.0
    own = fused[site]
    terms = []
    for k, other in enumerate(fused):
        if k == site:
            continue
        target = other.detach()
        terms.append(kl_div_torch110(own, target) if kind == "torch110" else _kl_softmax(own, target))
    return -torch.stack(terms).sum() / (len(fused) - 1)


def pseudo_label(main_logits: torch.Tensor, aux_logits: torch.Tensor, lam: float) -> torch.Tensor:
    """``argmax(lam softmax(main) + (1 - lam) softmax(aux))`` without gradient: (B, H, W) long."""
    with torch.no_grad():
        mixed = lam * main_logits.softmax(1) + (1 - lam) * aux_logits.softmax(1)
        return mixed.argmax(1)


def pls_loss(main_logits: torch.Tensor, aux_logits: torch.Tensor, lam: float, ignore_index: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_pls`` and the pseudo label it used."""
    y_hat = pseudo_label(main_logits, aux_logits, lam)
    loss = 0.5 * (partial_dice_loss(main_logits.softmax(1), y_hat, ignore_index)
                  + partial_dice_loss(aux_logits.softmax(1), y_hat, ignore_index))
    return loss, y_hat


@dataclass
class LossTerms:
    total: torch.Tensor
    pce: float
    uni: float
    pls: float
    pseudo: torch.Tensor


def fedlppa_loss(logits: torch.Tensor, aux_logits: torch.Tensor, fused: Sequence[torch.Tensor], target: torch.Tensor,
                 site: int, lam: float, cfg: LossConfig, num_classes: int, beta: float | None = None) -> LossTerms:
    """The full client objective of FedLPPA (module docstring); ``target`` (B, H, W) with ``C`` = unlabelled;
    ``beta`` overrides ``cfg.beta`` (:func:`pls_weight`)."""
    pce = partial_cross_entropy(logits, target, num_classes)
    if cfg.aux_pce:
        pce = pce + partial_cross_entropy(aux_logits, target, num_classes)
    uni = uni_loss(fused, site, cfg.uni_kl)
    pls, y_hat = pls_loss(logits, aux_logits, lam, num_classes)
    total = pce + cfg.alpha * uni + (cfg.beta if beta is None else beta) * pls
    return LossTerms(total, float(pce.detach()), float(uni.detach()), float(pls.detach()), y_hat)
