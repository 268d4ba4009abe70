"""Baselines of the comparison (our choices; UNO-QA's own baselines are not available).

All anomaly baselines use the same frozen backbone as UNO-QA (so the comparison isolates the adaptors + bank +
clustering), the same outstanding-only training images and the same tau rule (95th percentile of the held-out
outstanding scores). The ungradable/gradable split is a second threshold on the same score (Otsu over the
non-outstanding scores, or the upper cut of a 3-component GMM): this shows what test-time clustering adds.

- ``padim``: per-position Gaussian of layers 1-3 (random 100-channel subset), Mahalanobis distance, image score =
  max of the map (Defard et al., ICPR 2021; anomalib defaults);
- ``patchcore``: layers 2-3 with 3x3 neighbourhood aggregation, greedy coreset (10 %), nearest-neighbour distance,
  image score = max (Roth et al., CVPR 2022; without the re-weighting step);
- ``kmeans_raw_transductive``: k-means (k = 3) on PCA of pooled raw backbone features of the test images (scaler,
  PCA and k-means are fitted on the test set: transductive); clusters named by their distance to the mean of the
  outstanding training images (nearest = outstanding, farthest = ungradable);
- ``supervised``: the same backbone (same initialisation) + a linear head on the spatial mean and std of its scales,
  fine-tuned with cross-entropy on all training labels (AdamW, warm-up + cosine schedule), the epoch of lowest loss
  on a stratified 20 % validation part of the training set kept (the upper bound, as in the dataset's own paper,
  COIPS, which fine-tunes ImageNet classifiers);
- ``handcrafted_logreg``: global image statistics (:mod:`octa_iqa.handcrafted`) + a class-balanced logistic
  regression on all training labels (what a simple supervised model reaches).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.seed import seed_loader_epoch
from octa_iqa.data import QualityDataset, Record, load_image
from octa_iqa.engine import make_loader
from octa_iqa.handcrafted import statistics_matrix
from octa_iqa.model import build_backbone, greedy_coreset, nearest_distances
from octa_iqa.settings import Config
from octa_iqa.thresholds import quantile_threshold, second_threshold

__all__ = ["BaselineOutput", "backbone_features", "two_threshold_labels", "padim", "patchcore",
           "kmeans_raw_transductive", "SupervisedNet", "build_supervised", "supervised",
           "handcrafted_logreg"]


@dataclass
class BaselineOutput:
    """``pred`` (N,) in {0, 1, 2}; ``score`` (N,) outstanding-vs-rest score (higher = worse); ``ug_score`` (N,);
    ``tau`` the outstanding threshold (NaN where the method has none)."""

    pred: np.ndarray
    score: np.ndarray
    ug_score: np.ndarray
    tau: float = float("nan")


@torch.no_grad()
def backbone_features(backbone: nn.Module, records: Sequence[Record], cfg: Config, device: torch.device
                      ) -> list[torch.Tensor]:
    """Frozen backbone outputs per scale, each (N, C_l, H_l, W_l) on CPU."""
    backbone.eval()
    loader = make_loader(QualityDataset(records, cfg.data, cfg.model.pretrained), cfg.optim.batch_size, False,
                         cfg.seed, cfg.data.num_workers)
    outs: list[list[torch.Tensor]] = []
    for batch in tqdm(loader, desc="baseline features", leave=False, disable=not cfg.runtime.progress):
        feats = backbone(batch["image"].to(device))
        outs.append([f.cpu() for f in feats])
    return [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]


def two_threshold_labels(scores: np.ndarray, tau: float, rule: str = "otsu", seed: int = 0) -> np.ndarray:
    """s <= tau: outstanding (2); above: a second cut splits gradable (1) from ungradable (0)."""
    non = scores > tau
    pred = np.full(len(scores), 2, np.int64)
    if non.any():
        cut = second_threshold(scores[non] if rule == "otsu" else scores, rule, seed)
        pred[non] = np.where(scores[non] > cut, 0, 1)
    return pred


def _concat_scales(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    size = feats[0].shape[-2:]
    return torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear",
                                                                   align_corners=False) for f in feats], dim=1)


def _padim_maps(feats: torch.Tensor, mean: torch.Tensor, inv_cov: torch.Tensor) -> torch.Tensor:
    """(N, d, H, W) features -> (N, H*W) Mahalanobis distances."""
    x = feats.flatten(2).permute(2, 0, 1)  # (P, N, d)
    delta = x - mean[:, None, :]
    dist = torch.einsum("pnd,pde,pne->pn", delta, inv_cov, delta).clamp_min(0).sqrt()
    return dist.T


def padim(train: Sequence[torch.Tensor], hold: Sequence[torch.Tensor], test: Sequence[torch.Tensor], cfg: Config
          ) -> BaselineOutput:
    gen = torch.Generator().manual_seed(cfg.seed)
    fit = _concat_scales(train)
    idx = torch.randperm(fit.shape[1], generator=gen)[: cfg.baselines.padim_dims]
    fit = fit[:, idx].double()
    x = fit.flatten(2).permute(2, 0, 1)  # (P, N, d)
    mean = x.mean(1)
    centred = x - mean[:, None]
    cov = centred.transpose(1, 2) @ centred / max(x.shape[1] - 1, 1)
    cov += 0.01 * torch.eye(cov.shape[-1], dtype=cov.dtype)
    inv_cov = torch.linalg.inv(cov)

    def score(feats: Sequence[torch.Tensor]) -> np.ndarray:
        maps = _padim_maps(_concat_scales(feats)[:, idx].double(), mean, inv_cov)
        return maps.max(1).values.numpy()

    return _finish(score(hold), score(test), cfg)


def _patchcore_embed(feats: Sequence[torch.Tensor], k: int = 3) -> torch.Tensor:
    pooled = [F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=False) for f in feats[-2:]]
    emb = _concat_scales(pooled)
    return emb.flatten(2).transpose(1, 2)  # (N, P, C)


def patchcore(train: Sequence[torch.Tensor], hold: Sequence[torch.Tensor], test: Sequence[torch.Tensor], cfg: Config
              ) -> BaselineOutput:
    fit = _patchcore_embed(train)
    points = fit.reshape(-1, fit.shape[-1])
    count = max(1, int(round(cfg.baselines.patchcore_coreset_ratio * len(points))))
    bank = points[greedy_coreset(points, count, cfg.bank.projection_dim, cfg.seed)]

    def score(feats: Sequence[torch.Tensor]) -> np.ndarray:
        emb = _patchcore_embed(feats)
        d = nearest_distances(emb.reshape(-1, emb.shape[-1]), bank, k=1)[0][:, 0].sqrt()
        return d.view(emb.shape[0], emb.shape[1]).max(1).values.numpy()

    return _finish(score(hold), score(test), cfg)


def _finish(hold_scores: np.ndarray, test_scores: np.ndarray, cfg: Config) -> BaselineOutput:
    tau = quantile_threshold(hold_scores, cfg.threshold.quantile)
    pred = two_threshold_labels(test_scores, tau, cfg.baselines.second_split, cfg.seed)
    return BaselineOutput(pred, test_scores, test_scores, tau)


def kmeans_raw_transductive(train: Sequence[torch.Tensor], test: Sequence[torch.Tensor], cfg: Config) -> BaselineOutput:
    """k-means (k = 3) on raw pooled backbone features of the test images; named by distance to the normal mean."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    def pooled(feats: Sequence[torch.Tensor]) -> np.ndarray:
        return torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1).numpy().astype(np.float64)

    x_test, x_train = pooled(test), pooled(train)
    scaler = StandardScaler().fit(x_test)
    pca = PCA(min(cfg.cluster.n_components, len(x_test) - 1), random_state=cfg.seed).fit(scaler.transform(x_test))
    z_test, z_train = pca.transform(scaler.transform(x_test)), pca.transform(scaler.transform(x_train))
    km = KMeans(3, n_init=cfg.cluster.n_init, random_state=cfg.seed).fit(z_test)
    normal = z_train.mean(0)
    order = np.argsort(np.linalg.norm(km.cluster_centers_ - normal, axis=1))  # nearest first
    name = {int(order[0]): 2, int(order[1]): 1, int(order[2]): 0}
    pred = np.array([name[int(c)] for c in km.labels_], np.int64)
    dist = np.linalg.norm(z_test - normal, axis=1)
    return BaselineOutput(pred, dist, dist)


def _probabilities(probs: np.ndarray) -> BaselineOutput:
    """(N, 3) class probabilities -> prediction, outstanding-vs-rest score 1 - p2, ungradable share p0 / (p0 + p1)."""
    ug = probs[:, 0] / np.maximum(probs[:, 0] + probs[:, 1], 1e-12)
    return BaselineOutput(probs.argmax(1), 1.0 - probs[:, 2], ug)


def _class_weight(records: Sequence[Record], device: torch.device) -> torch.Tensor:
    counts = np.bincount([r.label for r in records], minlength=3).astype(np.float64)
    return torch.tensor(counts.sum() / np.maximum(counts, 1) / 3, dtype=torch.float32, device=device)


class SupervisedNet(nn.Module):
    """UNO-QA's feature extractor (the same ``features_only`` scales) + spatial mean and standard deviation of every
    scale (the pooling of UNO-QA's image-level term) + a linear head: (B, 3, S, S) -> (B, 3) logits.

    ``train_from``: the first backbone module that is fine-tuned; the modules before it stay frozen (weights and
    BatchNorm statistics). ``None`` fine-tunes all of them."""

    def __init__(self, backbone: nn.Module, num_classes: int = 3, train_from: str | None = None):
        super().__init__()
        self.backbone = backbone
        names = [name for name, _ in backbone.named_children()]
        if train_from is not None and train_from not in names:
            raise ValueError(f"baselines.supervised_train_from={train_from!r} is not a module of the backbone; "
                             f"choose one of {names} (or null: fine-tune every module)")
        self.frozen = names[: names.index(train_from)] if train_from is not None else []
        for name in self.frozen:
            for p in getattr(backbone, name).parameters():
                p.requires_grad_(False)
        self.head = nn.Linear(2 * sum(backbone.feature_info.channels()), num_classes)

    def train(self, mode: bool = True) -> SupervisedNet:
        super().train(mode)
        for name in self.frozen:
            getattr(self.backbone, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in feats] + [f.std(dim=(2, 3)) for f in feats], dim=1)
        return self.head(pooled)


@torch.no_grad()
def _predict_probs(net: nn.Module, records: Sequence[Record], cfg: Config, device: torch.device) -> np.ndarray:
    net.eval()
    loader = make_loader(QualityDataset(records, cfg.data, cfg.model.pretrained), cfg.baselines.supervised_batch_size,
                         False, cfg.seed, cfg.data.num_workers)
    return torch.cat([net(b["image"].to(device)).softmax(1).cpu() for b in loader]).numpy()


def _validate(net: nn.Module, records: Sequence[Record], cfg: Config, weight: torch.Tensor, device: torch.device
              ) -> tuple[float, float]:
    """Class-weighted cross-entropy and balanced accuracy on the validation part."""
    from sklearn.metrics import balanced_accuracy_score

    probs = _predict_probs(net, records, cfg, device)
    labels = np.array([r.label for r in records])
    loss = F.nll_loss(torch.from_numpy(probs).clamp_min(1e-8).log(), torch.from_numpy(labels), weight=weight.cpu())
    return float(loss), float(balanced_accuracy_score(labels, probs.argmax(1)))


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from 10 % of the peak over ``warmup_steps`` (one epoch), then cosine decay to 0; stepped once
    per optimiser step."""
    warm = min(warmup_steps, total_steps - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warm, 1))
    if warm < 1:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def build_supervised(backbone_state: dict, cfg: Config) -> SupervisedNet:
    """:class:`SupervisedNet` initialised with UNO-QA's backbone weights (VICReg, a weight file or random: the same
    initialisation as the unsupervised rows)."""
    backbone = build_backbone(cfg.model, "none")
    backbone.load_state_dict(backbone_state)
    return SupervisedNet(backbone, 3, cfg.baselines.supervised_train_from)


def supervised(backbone_state: dict, train_records: Sequence[Record], test_records: Sequence[Record], cfg: Config,
               device: torch.device) -> BaselineOutput:
    """Fine-tune UNO-QA's backbone + a linear head on all three classes (class-weighted cross-entropy, AdamW, one
    warm-up epoch then cosine decay over ``supervised_epochs``; flips/+-5 deg/brightness); the validation part
    (stratified 20 % of the training split) selects the epoch of lowest validation loss and stops the run after
    ``supervised_patience`` epochs without improvement."""
    from sklearn.model_selection import train_test_split

    b = cfg.baselines
    net = build_supervised(backbone_state, cfg).to(device)
    fit, val = train_test_split(list(train_records), test_size=b.supervised_val_fraction, random_state=cfg.seed,
                                stratify=[r.label for r in train_records])
    loader = make_loader(QualityDataset(fit, cfg.data, cfg.model.pretrained, augment=True, seed=cfg.seed),
                         b.supervised_batch_size, True, cfg.seed, cfg.data.num_workers)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=b.supervised_lr, weight_decay=b.supervised_weight_decay)
    scheduler = _warmup_cosine(optimizer, len(loader), b.supervised_epochs * len(loader))
    weight = _class_weight(train_records, device)
    best, best_state, bad = float("inf"), None, 0
    for epoch in tqdm(range(b.supervised_epochs), desc="supervised", disable=not cfg.runtime.progress):
        tic = time.time()
        seed_loader_epoch(loader, cfg.seed, epoch)
        net.train()
        train_loss, n = 0.0, 0
        for batch in tqdm(loader, desc="supervised steps", leave=False, disable=not cfg.runtime.progress):
            labels = torch.as_tensor(batch["label"], device=device)
            loss = F.cross_entropy(net(batch["image"].to(device)), labels, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            train_loss, n = train_loss + float(loss.detach()) * len(labels), n + len(labels)
        val_loss, val_bacc = _validate(net, val, cfg, weight, device)
        improved = val_loss < best - 1e-4
        print(f"[supervised] epoch {epoch + 1}/{b.supervised_epochs} train={train_loss / max(n, 1):.4f} "
              f"val={val_loss:.4f} val_bacc={val_bacc:.3f}{' *' if improved else ''} ({time.time() - tic:.0f}s)",
              flush=True)
        if improved:
            best, bad = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= b.supervised_patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return _probabilities(_predict_probs(net, test_records, cfg, device))


def handcrafted_logreg(train_records: Sequence[Record], test_records: Sequence[Record], cfg: Config
                       ) -> BaselineOutput:
    """Global image statistics + class-balanced logistic regression (standardised features), all training labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def stats(records: Sequence[Record]) -> np.ndarray:
        return statistics_matrix([load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in records])

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced"))
    model.fit(stats(train_records), [r.label for r in train_records])
    return _probabilities(model.predict_proba(stats(test_records)))
