"""Losses: cross-entropy, class-balanced re-weighting, balanced softmax and PaCo (GPaCo ``LT/losses.py``).

- Re-weighting: class-balanced loss by effective number (Cui et al. 2019), ``w_c ∝ (1 - b) / (1 - b^{n_c})``,
  normalised to sum to C.
- Balanced softmax (Ren et al. 2020): CE on ``logits + log prior``.
- PaCo (Cui et al. 2021, GPaCo ``LT/losses.py`` as used by the SPMix code): anchors are the 2B query/key features,
  the contrast set is ``[q, k, queue]``; each anchor's logit row is ``[(logits + log prior) / supt, f·f'/T]``,
  positives weighted ``beta`` on the one-hot class logit and ``alpha`` on same-label contrast entries, ``gamma``
  scales the contrast part of the denominator, self excluded; loss ``-(T / T_base) mean(weighted mean log p)``.

All classification losses take soft targets ``(B, C)`` so that Mixup/CutMix-style label mixing uses them as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "reweighting", "balanced_softmax", "paco")


def class_prior(counts: Sequence[int]) -> torch.Tensor:
    """Training class counts ``(C,)`` -> prior ``(C,)`` summing to 1 (zero counts get a tiny mass)."""
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=torch.float32).clamp_min(1e-3)
    return c / c.sum()


def effective_number_weights(counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights ``(C,)``: ``(1 - beta) / (1 - beta^n_c)`` normalised to sum to C."""
    n = np.asarray(counts, dtype=np.float64).clip(min=1)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    w = w / w.sum() * len(n)
    return torch.as_tensor(w, dtype=torch.float32)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """``(B, C)`` logits, ``(B, C)`` soft targets -> scalar. ``weight (C,)``: per-sample weight = sum_c t_c w_c,
    normalised by the summed sample weights (PyTorch's weighted-CE convention)."""
    per_sample = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weight is None:
        return per_sample.mean()
    w = targets @ weight.to(targets.device)
    return (w * per_sample).sum() / w.sum().clamp_min(1e-12)


class ClassificationLoss(nn.Module):
    """``ce | reweighting | balanced_softmax`` on soft targets: ``(B, C), (B, C) -> scalar``."""

    def __init__(self, kind: str, counts: Sequence[int], cb_beta: float = 0.9999):
        super().__init__()
        if kind not in ("ce", "reweighting", "balanced_softmax"):
            raise ValueError(f"loss {kind!r} is not a classification loss; use ce, reweighting or balanced_softmax")
        self.kind = kind
        self.register_buffer("log_prior", class_prior(counts).log())
        self.register_buffer("weight", effective_number_weights(counts, cb_beta))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "balanced_softmax":
            return soft_cross_entropy(logits + self.log_prior, targets)
        return soft_cross_entropy(logits, targets, self.weight if self.kind == "reweighting" else None)


class PaCoLoss(nn.Module):
    """Parametric contrastive loss with a label queue.

    forward(features ``(2B + K, d)`` = [q; k; queue] L2-normalised, labels ``(2B + K,)``, sup_logits ``(2B, C)``)
    -> scalar. ``K`` is the queue length (0 allowed).
    """

    def __init__(self, counts: Sequence[int], alpha: float = 0.05, beta: float = 1.0, gamma: float = 1.0,
                 temperature: float = 0.2, base_temperature: float | None = None, supt: float = 1.0,
                 smooth: float = 0.0):
        super().__init__()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.temperature = temperature
        self.base_temperature = temperature if base_temperature is None else base_temperature
        self.supt, self.smooth = supt, smooth
        prior = class_prior(counts)
        self.num_classes = prior.numel()
        self.register_buffer("log_prior", torch.log(prior + 1e-9))

    def forward(self, features: torch.Tensor, labels: torch.Tensor, sup_logits: torch.Tensor) -> torch.Tensor:
        n_anchor = sup_logits.shape[0]
        labels = labels.view(-1, 1)
        mask = torch.eq(labels[:n_anchor], labels.T).float()
        contrast = features[:n_anchor].float() @ features.float().T / self.temperature
        logits = torch.cat([(sup_logits.float() + self.log_prior) / self.supt, contrast], dim=1)
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        not_self = torch.ones_like(mask)
        not_self[torch.arange(n_anchor), torch.arange(n_anchor)] = 0
        mask = mask * not_self
        hot = F.one_hot(labels[:n_anchor].view(-1).long(), self.num_classes).float()
        hot = self.smooth / max(self.num_classes - 1, 1) * (1 - hot) + (1 - self.smooth) * hot
        pos = torch.cat([hot * self.beta, mask * self.alpha], dim=1)
        denom_mask = torch.cat([torch.ones_like(hot), self.gamma * not_self], dim=1)
        log_prob = logits - torch.log((torch.exp(logits) * denom_mask).sum(1, keepdim=True) + 1e-12)
        mean_log_prob_pos = (pos * log_prob).sum(1) / pos.sum(1)
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


class LabelQueue(nn.Module):
    """FIFO queue of ``K`` key features ``(K, d)`` with labels ``(K,)``; empty slots are excluded until filled."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(self.filled)
        return self.features[:n], self.labels[:n]

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        if self.size == 0:
            return
        keys, labels = keys.detach()[-self.size:], labels.detach()[-self.size:]
        idx = (int(self.ptr) + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.features[idx] = keys.to(self.features.dtype)
        self.labels[idx] = labels.long()
        self.ptr.fill_((int(self.ptr) + keys.shape[0]) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + keys.shape[0]))
