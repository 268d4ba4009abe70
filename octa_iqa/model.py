"""Feature-embedding-based low-quality representation module (UNO-QA abstract; our concrete design).

- Multi-scale feature extractor: a timm backbone with ``features_only`` (layers 1-3, strides 4/8/16), frozen.
- Patch neighbourhood aggregation: ``k x k`` average pooling (stride 1) of every scale (as in PatchCore).
- Trainable per-scale adaptors: 1x1 convolutions ``C_l -> D``; all scales upsampled to the layer-1 grid and
  concatenated, giving one ``E = L * D`` embedding per patch.
- Memory bank ``M`` of normal patch embeddings: k-means centres or a greedy coreset (:func:`kmeans_bank`,
  :func:`greedy_coreset`).
- Compactness objective (:func:`compactness_loss`): squared distance to the nearest centre, a margin hinge on the
  second-nearest centre (CFA-style) and a variance floor (VICReg-style) that rules out the collapsed solution.
- Quality score ``s(x)``: mean of the top 1 % nearest-centre patch distances (:func:`image_scores`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.weights import create_timm_model
from octa_iqa.settings import BankConfig, LossConfig, ModelConfig

__all__ = ["build_backbone", "build_model", "Adaptors", "LowQualityRepresentation", "Embedding", "nearest_distances",
           "compactness_loss",
           "image_scores", "kmeans_bank", "greedy_coreset", "fit_bank", "count_trainable"]


def build_backbone(cfg: ModelConfig, weights: str | None = None) -> nn.Module:
    """timm ``features_only`` backbone. ``weights``: ``none``/``selfsup`` -> random init (selfsup weights are
    trained later by :mod:`octa_iqa.selfsup`), ``hub`` -> clear offline error, a path -> local ImageNet weights."""
    source = cfg.pretrained if weights is None else weights
    source = "none" if source in ("none", "selfsup") else source
    return create_timm_model(cfg.backbone, source, config_key="model.pretrained", features_only=True,
                             out_indices=tuple(cfg.out_indices))


@dataclass
class Embedding:
    """``patches`` (B, E, H1, W1): concatenated adapted scales on the layer-1 grid; ``scales``: per scale
    (B, D, H_l, W_l) adapted maps (for the clustering descriptor)."""

    patches: torch.Tensor
    scales: list[torch.Tensor]


class Adaptors(nn.ModuleList):
    """Per-scale 1x1 convolutions ``C_l -> D``; a module of its own so that DDP can wrap exactly what trains."""

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [adaptor(f) for adaptor, f in zip(self, feats)]


class LowQualityRepresentation(nn.Module):
    """Frozen backbone + trainable adaptors + memory bank buffer ``bank`` (K, E)."""

    def __init__(self, backbone: nn.Module, adaptor_dim: int = 128, aggregation_kernel: int = 3, bank_size: int = 1):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        channels = backbone.feature_info.channels()
        self.kernel = aggregation_kernel
        self.adaptors = Adaptors(nn.Conv2d(c, adaptor_dim, kernel_size=1) for c in channels)
        self.embed_dim = adaptor_dim * len(channels)
        self.register_buffer("bank", torch.zeros(bank_size, self.embed_dim))
        self.register_buffer("scale", torch.ones(()))  # mean per-dimension std of the initial normal embeddings
        # image-level term: Gaussian of the pooled adapted scales of the outstanding images (mean, precision), and
        # the held-out (median, spread) of the patch term and of the image term that put both on one scale
        self.register_buffer("pooled_mean", torch.zeros(2 * self.embed_dim))
        self.register_buffer("pooled_precision", torch.eye(2 * self.embed_dim))
        self.register_buffer("term_stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def train(self, mode: bool = True) -> LowQualityRepresentation:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics never move
        return self

    @torch.no_grad()
    def backbone_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) -> per-scale (B, C_l, S / stride_l, S / stride_l), neighbourhood-aggregated."""
        feats = self.backbone(x)
        if self.kernel > 1:
            feats = [F.avg_pool2d(f, self.kernel, stride=1, padding=self.kernel // 2, count_include_pad=False)
                     for f in feats]
        return feats

    def embed(self, x: torch.Tensor | None = None, feats: list[torch.Tensor] | None = None,
              adaptors: nn.Module | None = None) -> Embedding:
        """(B, 3, S, S) images, or their cached :meth:`backbone_features`, -> :class:`Embedding` with patches
        (B, E, S/4, S/4). ``adaptors``: the DDP-wrapped :attr:`adaptors` in a torchrun job."""
        feats = self.backbone_features(x) if feats is None else feats
        scales = (adaptors or self.adaptors)(feats)
        size = scales[0].shape[-2:]
        up = [s if s.shape[-2:] == size else F.interpolate(s, size=size, mode="bilinear", align_corners=False)
              for s in scales]
        return Embedding(torch.cat(up, dim=1), scales)

    def set_bank(self, bank: torch.Tensor) -> None:
        """Replace the memory bank (K, E); K may change (coreset)."""
        if bank.ndim != 2 or bank.shape[1] != self.embed_dim:
            raise ValueError(f"bank must be (K, {self.embed_dim}), got {tuple(bank.shape)}")
        self.bank = bank.detach().to(self.bank.device, self.bank.dtype).clone()

    def fit_image_term(self, pooled: np.ndarray) -> None:
        """Fit the Gaussian (Ledoit-Wolf shrinkage) of (N, 2*L*D) pooled adapted scales (spatial mean and std) of
        outstanding images."""
        from sklearn.covariance import LedoitWolf

        pooled = np.asarray(pooled, dtype=np.float64)
        lw = LedoitWolf().fit(pooled)
        self.pooled_mean = torch.as_tensor(lw.location_, dtype=torch.float32, device=self.bank.device)
        self.pooled_precision = torch.as_tensor(lw.precision_, dtype=torch.float32, device=self.bank.device)

    def image_term(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, 2*L*D) pooled adapted scales -> (N,) Mahalanobis distance to the outstanding Gaussian."""
        delta = pooled.to(self.pooled_mean) - self.pooled_mean
        return torch.einsum("nd,de,ne->n", delta, self.pooled_precision, delta).clamp_min(0).sqrt()

    def set_term_stats(self, patch_term: np.ndarray, image_term: np.ndarray) -> None:
        """Median and standard deviation of both terms over held-out outstanding images."""
        stats = [float(np.median(patch_term)), float(np.std(patch_term)) + 1e-8,
                 float(np.median(image_term)), float(np.std(image_term)) + 1e-8]
        self.term_stats = torch.tensor(stats, device=self.bank.device)

    def combine(self, patch_term: torch.Tensor, image_term: torch.Tensor, image_weight: float,
                two_sided: bool = True) -> torch.Tensor:
        """s(x) = |z(patch term)| + image_weight * z(image term), each standardised by :meth:`set_term_stats`.
        Two-sided patch term: a patch distance far *below* the outstanding images' is as anomalous as one far above
        (darkening pulls patches towards the dark FAZ / inter-vessel centres of the bank). ``image_weight = 0``
        leaves the raw top-1 % patch score."""
        if image_weight == 0:
            return patch_term
        p_mu, p_sd, g_mu, g_sd = (float(v) for v in self.term_stats)
        z_patch = (patch_term - p_mu) / p_sd
        return (z_patch.abs() if two_sided else z_patch) + image_weight * (image_term.to(patch_term) - g_mu) / g_sd

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch signature
        key = prefix + "bank"
        if key in state_dict and state_dict[key].shape != self.bank.shape:
            self.bank = torch.zeros_like(state_dict[key], device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def patch_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, Embedding]:
        """(B, 3, S, S) -> nearest-centre Euclidean distance per patch (B, H1 * W1) and the embedding."""
        emb = self.embed(x)
        return self.distances(emb), emb

    @torch.no_grad()
    def distances(self, emb: Embedding) -> torch.Tensor:
        """Nearest-centre Euclidean distance per patch (B, H1 * W1) of an embedding."""
        flat = emb.patches.flatten(2).transpose(1, 2)  # (B, P, E)
        dist = nearest_distances(flat.reshape(-1, self.embed_dim), self.bank, k=1)[0][:, 0]
        return dist.sqrt().view(flat.shape[0], flat.shape[1])


def nearest_distances(points: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 8192
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Euclidean distances (M, k) from each of (M, E) points to its k nearest rows of bank (K, E), and
    their indices (M, k). Chunked so that M x K never has to fit in memory at once."""
    k = min(k, bank.shape[0])
    values, indices = [], []
    bank_sq = (bank * bank).sum(1)
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]
        d = (p * p).sum(1, keepdim=True) - 2 * p @ bank.T + bank_sq[None]
        v, i = d.clamp_min(0).topk(k, dim=1, largest=False)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def compactness_loss(patches: torch.Tensor, bank: torch.Tensor, cfg: LossConfig, scale: torch.Tensor | float = 1.0
                     ) -> dict[str, torch.Tensor]:
    """Patches (M, E) vs fixed centres (K, E). Everything is measured in units of ``scale`` (the per-dimension std
    of the initial normal embeddings): squared L2 distances divided by ``E * scale**2``, a hinge asking the second
    nearest centre to be ``margin`` further than the nearest, and a floor ``variance_floor * scale`` on every
    dimension's std so that shrinking the embedding (the collapsed solution) is not a way to be compact.
    Returns ``loss`` and its terms."""
    dim = patches.shape[1]
    scale = torch.as_tensor(scale, dtype=patches.dtype, device=patches.device).detach()
    d, _ = nearest_distances(patches, bank.detach(), k=2, chunk=patches.shape[0])
    d = d / (dim * scale**2)
    compact = d[:, 0].mean()
    hinge = F.relu(cfg.margin + d[:, 0] - d[:, 1]).mean() if d.shape[1] > 1 else torch.zeros((), device=d.device)
    std = torch.sqrt(patches.var(dim=0) + 1e-8) / scale
    variance = F.relu(cfg.variance_floor - std).mean()
    loss = compact + cfg.margin_weight * hinge + cfg.variance_weight * variance
    return {"loss": loss, "compact": compact.detach(), "hinge": hinge.detach(), "variance": variance.detach()}


def image_scores(patch_scores: torch.Tensor, top_fraction: float = 0.01, aggregate: str = "topk_mean"
                 ) -> torch.Tensor:
    """Patch scores (B, P) -> image score (B,): mean of the top ``ceil(top_fraction * P)`` patches, or the max."""
    if aggregate == "max":
        return patch_scores.max(dim=1).values
    k = max(1, math.ceil(top_fraction * patch_scores.shape[1]))
    return patch_scores.topk(k, dim=1).values.mean(dim=1)


def kmeans_bank(points: np.ndarray | torch.Tensor, size: int, seed: int, iters: int = 15,
                init: torch.Tensor | None = None) -> torch.Tensor:
    """K-means centres (size, E) of (M, E) patch embeddings: seeded k-means++ initialisation (or a warm start from
    ``init``, the previous bank) + Lloyd iterations in torch (matrix products; scikit-learn's KMeans is several
    times slower at K = 256 on a CPU)."""
    x = torch.as_tensor(points, dtype=torch.float32)
    size = min(size, len(x))
    if init is not None and init.shape == (size, x.shape[1]):
        return _lloyd(x, init.float().clone(), iters)
    gen = torch.Generator().manual_seed(seed)
    x_sq = (x * x).sum(1)
    first = int(torch.randint(len(x), (1,), generator=gen))
    centres = [x[first]]
    d_min = (x_sq - 2 * x @ x[first] + x_sq[first]).clamp_min(0)
    for _ in range(size - 1):
        probs = d_min / d_min.sum() if float(d_min.sum()) > 0 else torch.full_like(d_min, 1 / len(d_min))
        idx = int(torch.multinomial(probs, 1, generator=gen))
        centres.append(x[idx])
        d_min = torch.minimum(d_min, (x_sq - 2 * x @ x[idx] + x_sq[idx]).clamp_min(0))
    return _lloyd(x, torch.stack(centres), iters)


def _lloyd(x: torch.Tensor, c: torch.Tensor, iters: int) -> torch.Tensor:
    size = len(c)
    for _ in range(iters):
        assign = nearest_distances(x, c, k=1)[1][:, 0]
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=size).to(x.dtype)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        if torch.allclose(moved, c):
            break
        c = moved
    return c


def greedy_coreset(points: torch.Tensor, count: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """PatchCore's greedy k-center coreset: indices (count,) chosen on a seeded random projection of (M, E)."""
    gen = torch.Generator().manual_seed(seed)
    count = min(count, points.shape[0])
    feats = points
    if projection_dim and points.shape[1] > projection_dim:
        proj = torch.randn(points.shape[1], projection_dim, generator=gen) / math.sqrt(projection_dim)
        feats = points @ proj.to(points)
    sq = (feats * feats).sum(1)
    start = int(torch.randint(points.shape[0], (1,), generator=gen))
    selected = [start]
    min_dist = (sq - 2 * feats @ feats[start] + sq[start]).clamp_min(0)
    for _ in range(count - 1):
        idx = int(min_dist.argmax())
        selected.append(idx)
        torch.minimum(min_dist, (sq - 2 * feats @ feats[idx] + sq[idx]).clamp_min(0), out=min_dist)
    return torch.tensor(selected, dtype=torch.long)


def fit_bank(points: torch.Tensor, cfg: BankConfig, seed: int, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Memory bank from (M, E) normal patch embeddings: k-means centres on a seeded sub-sample (warm-started from
    the ``previous`` bank when given), or a coreset."""
    points = points.detach().float().cpu()
    if cfg.kind == "coreset":
        idx = greedy_coreset(points, max(1, int(round(cfg.coreset_ratio * len(points)))), cfg.projection_dim, seed)
        return points[idx].clone()
    if len(points) > cfg.fit_patches:
        sel = torch.from_numpy(np.random.default_rng(seed).choice(len(points), cfg.fit_patches, replace=False))
        points = points[sel]
    return kmeans_bank(points, cfg.size, seed, init=previous)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(cfg: ModelConfig, weights: str | None = None) -> LowQualityRepresentation:
    """Backbone (``weights`` overrides ``model.pretrained``; pass ``"none"`` when a checkpoint will be loaded) +
    adaptors + an empty bank."""
    return LowQualityRepresentation(build_backbone(cfg, weights), cfg.adaptor_dim, cfg.aggregation_kernel)
