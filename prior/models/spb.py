"""Sentence Prototype Bank (PRIOR Sec. 3.3; official ``codes/prior/modules/spb.py``).

``K`` learnable prototypes; a sentence embedding ``x`` is replaced by ``softmax_gumbel(x E^T / tau) E`` (dot-product
logits, Gumbel-softmax with tau 0.9, soft, no straight-through), with an L1 loss between the output and ``x``.
The official module stores the logits of its last call for the KL term of report reconstruction; here the
logits are returned and passed explicitly (stateless). At evaluation the Gumbel noise is off unless
``eval_noise`` (the official zero-shot path keeps it, so its predictions are random).

``assign: distance`` [ours] uses logits ``-||x - e||^2`` instead of the official dot product: a dot product
favours the codes of largest norm, so a bank initialised by k-means (whose centres are defined by the nearest
centre, i.e. by distance) still sends almost every sentence to a few large-norm codes.

``logit_scale`` [ours, default 1 = official] multiplies the logits before the Gumbel noise. The noise
(std pi/sqrt(6)) is added to logits whose spread scales with the embedding norms, so in a small joint space
(64-d, k-means codes at the data's scale) the noisy argmax of a training sentence often differs from its clean
one; a scale > 1 makes the training assignment nearly deterministic (``gumbel_softmax((s l + g) / tau)``; ``tau``
alone cannot do this, it divides noise and logits alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SPB", "SPBOutput", "kmeans_codes"]


@dataclass
class SPBOutput:
    """``quantized`` ``(N, D)``, ``loss`` (mean L1 to the input), ``index`` ``(N,)`` argmax code, ``logits``
    ``(N, K)`` (the dot products x E^T, or minus the squared distances)."""

    quantized: torch.Tensor
    loss: torch.Tensor
    index: torch.Tensor
    logits: torch.Tensor


class SPB(nn.Module):
    def __init__(self, dim: int, k: int = 512, tau: float = 0.9, eval_noise: bool = False, assign: str = "dot",
                 logit_scale: float = 1.0):
        super().__init__()
        if assign not in ("dot", "distance"):
            raise ValueError(f"spb assign must be 'dot' (official) or 'distance', got {assign!r}")
        if logit_scale <= 0:
            raise ValueError(f"spb logit_scale must be > 0, got {logit_scale}")
        self.embed = nn.Embedding(k, dim)  # N(0, 1) initialisation, as the official nn.Embedding
        self.tau = tau
        self.eval_noise = eval_noise
        self.assign = assign
        self.logit_scale = logit_scale

    def logits(self, flat: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``x E^T`` (official) or ``-||x - e||^2`` (``assign: distance``), times ``logit_scale``."""
        weight = self.embed.weight
        dots = flat @ weight.t()
        if self.assign == "dot":
            out = dots
        else:
            out = 2 * dots - (weight * weight).sum(1)[None, :] - (flat * flat).sum(1, keepdim=True)
        return out if self.logit_scale == 1.0 else self.logit_scale * out

    def forward(self, x: torch.Tensor) -> SPBOutput:
        """``x`` ``(N, D)`` -> :class:`SPBOutput`. Gumbel noise in training (and in eval with ``eval_noise``)."""
        flat = x.reshape(-1, self.embed.embedding_dim)
        logits = self.logits(flat)
        if self.training or self.eval_noise:
            soft = F.gumbel_softmax(logits, tau=self.tau, dim=1, hard=False)
        else:
            soft = F.softmax(logits / self.tau, dim=1)
        out = soft @ self.embed.weight
        return SPBOutput(out, (out - flat).abs().mean(), soft.argmax(1), logits)

    def kl(self, z: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        """KL(softmax(target_logits) || softmax(z E^T)), ``batchmean`` (official ``cal_loss``; the official target
        is the stored logits of the previous forward call)."""
        logits = self.logits(z.reshape(-1, self.embed.embedding_dim))
        return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(target_logits, -1), reduction="batchmean",
                        log_target=True)


@torch.no_grad()
def kmeans_codes(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """k-means (k-means++ seeding) of ``(N, D)`` embeddings -> ``(k, D)`` centres; with N < k the centres repeat
    the points with small noise [ours: SPB initialisation option]."""
    g = torch.Generator().manual_seed(seed)
    x = x.float().cpu()
    n = x.shape[0]
    if n <= k:
        reps = x[torch.arange(k) % n]
        return reps + 0.01 * reps.std() * torch.randn(reps.shape, generator=g)
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum().clamp(min=1e-12)
        nxt = x[torch.multinomial(probs, 1, generator=g)].squeeze(0)
        centres.append(nxt)
        d2 = torch.minimum(d2, ((x - nxt) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c
