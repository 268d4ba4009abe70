"""Training and scoring loops of the low-quality representation module (UNO-QA abstract; our recipe). No CLI.

- :func:`train_one_epoch`: adaptors trained with the compactness objective against the (fixed) memory bank;
- :func:`collect_patches`: adapted patch embeddings (M, E) of normal images for the bank refresh;
- :func:`score_loader`: per-image s(x), patch statistics and the pooled multi-scale descriptor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.seed import loader_seed_kwargs
from octa_iqa.model import LowQualityRepresentation, compactness_loss, image_scores
from octa_iqa.settings import LossConfig

__all__ = ["ScoredSet", "FeatureCache", "cache_features", "make_loader", "train_one_epoch", "evaluate_loss",
           "collect_patches", "score_loader", "stack_images"]


@dataclass
class ScoredSet:
    """Per image: ``scores`` s(x) (N,), ``patch_mean`` (N,), ``patch_p99`` (N,), ``pooled`` (N, L*D) adapted
    scales averaged over space, ``labels`` (N,) (-1 when unlabeled) and ``maps`` (N, H1, W1) patch scores."""

    scores: np.ndarray
    patch_mean: np.ndarray
    patch_p99: np.ndarray
    pooled: np.ndarray
    labels: np.ndarray
    maps: np.ndarray

    @property
    def score_features(self) -> np.ndarray:
        """(N, 3): [s(x), mean patch score, 99th-percentile patch score]."""
        return np.stack([self.scores, self.patch_mean, self.patch_p99], axis=1)

    def subset(self, mask: np.ndarray) -> ScoredSet:
        return ScoredSet(*(getattr(self, f)[mask] for f in ("scores", "patch_mean", "patch_p99", "pooled", "labels",
                                                             "maps")))


class FeatureCache(Dataset):
    """Frozen-backbone features of a record list, computed once: items ``{"feats": [(C_l, H_l, W_l)], "label",
    "index"}`` (the default collate stacks them per scale). Used when ``data.augment`` is off."""

    def __init__(self, scales: list[torch.Tensor], records: Sequence):
        self.scales = scales
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return {"feats": [s[index] for s in self.scales], "label": self.records[index].label, "index": index}


@torch.no_grad()
def cache_features(model: LowQualityRepresentation, loader: DataLoader, device: torch.device) -> FeatureCache:
    model.eval()
    outs = [[f.cpu() for f in model.backbone_features(b["image"].to(device))] for b in loader]
    return FeatureCache([torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))], loader.dataset.records)


def _embed(model: LowQualityRepresentation, batch: dict, device: torch.device):
    if "feats" in batch:
        return model.embed(feats=[f.to(device) for f in batch["feats"]])
    return model.embed(batch["image"].to(device))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      **loader_seed_kwargs(seed))


def train_one_epoch(model: LowQualityRepresentation, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_cfg: LossConfig, device: torch.device) -> dict[str, float]:
    """One pass over the outstanding images; all patches of each image enter the loss. Returns mean terms."""
    model.train()
    totals: dict[str, float] = {}
    n = 0
    for batch in loader:
        n_img = len(batch["label"])
        patches = _embed(model, batch, device).patches.flatten(2).transpose(1, 2).reshape(-1, model.embed_dim)
        terms = compactness_loss(patches, model.bank, loss_cfg, model.scale)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * n_img
        n += n_img
    return {k: v / max(n, 1) for k, v in totals.items()}


@torch.no_grad()
def evaluate_loss(model: LowQualityRepresentation, loader: DataLoader, loss_cfg: LossConfig, device: torch.device
                  ) -> float:
    """Mean compactness loss over a loader (held-out outstanding images; early stopping)."""
    model.eval()
    total, n = 0.0, 0
    for batch in loader:
        patches = _embed(model, batch, device).patches.flatten(2).transpose(1, 2).reshape(-1, model.embed_dim)
        total += float(compactness_loss(patches, model.bank, loss_cfg, model.scale)["loss"]) * len(batch["label"])
        n += len(batch["label"])
    return total / max(n, 1)


@torch.no_grad()
def collect_patches(model: LowQualityRepresentation, loader: DataLoader, device: torch.device,
                    max_patches: int | None = None, seed: int = 0) -> torch.Tensor:
    """All adapted patch embeddings (M, E) of a loader (CPU), optionally a seeded sub-sample of ``max_patches``."""
    model.eval()
    chunks = [_embed(model, b, device).patches.flatten(2).transpose(1, 2).reshape(-1, model.embed_dim).cpu()
              for b in loader]
    points = torch.cat(chunks)
    if max_patches is not None and len(points) > max_patches:
        idx = np.random.default_rng(seed).choice(len(points), max_patches, replace=False)
        points = points[torch.from_numpy(np.sort(idx))]
    return points


@torch.no_grad()
def score_loader(model: LowQualityRepresentation, loader: DataLoader, device: torch.device, top_fraction: float = 0.01,
                 aggregate: str = "topk_mean") -> ScoredSet:
    model.eval()
    out: dict[str, list] = {k: [] for k in ("scores", "patch_mean", "patch_p99", "pooled", "labels", "maps")}
    for batch in loader:
        emb = _embed(model, batch, device)
        dist = model.distances(emb)
        n_img = len(dist)
        out["scores"].append(image_scores(dist, top_fraction, aggregate).cpu())
        out["patch_mean"].append(dist.mean(1).cpu())
        out["patch_p99"].append(torch.quantile(dist, 0.99, dim=1).cpu())
        out["pooled"].append(torch.cat([s.mean(dim=(2, 3)) for s in emb.scales], dim=1).cpu())
        out["labels"].append(torch.as_tensor(batch["label"]))
        out["maps"].append(dist.view(n_img, *emb.patches.shape[-2:]).cpu())
    return ScoredSet(*(torch.cat(out[k]).numpy() for k in ("scores", "patch_mean", "patch_p99", "pooled", "labels",
                                                            "maps")))


def stack_images(dataset: Dataset, indices: Sequence[int] | None = None) -> torch.Tensor:
    """(N, 3, S, S) tensor of a dataset's images (no augmentation unless the dataset has it)."""
    indices = range(len(dataset)) if indices is None else indices
    return torch.stack([dataset[i]["image"] for i in indices])
