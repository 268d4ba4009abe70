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
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from common.runtime import all_gather_with_grad, dist_info, gather_by_index, shard
from common.seed import loader_seed_kwargs
from octa_iqa.model import LowQualityRepresentation, compactness_loss, image_scores
from octa_iqa.settings import LossConfig

__all__ = ["ScoredSet", "FeatureCache", "cache_features", "make_loader", "train_one_epoch", "evaluate_loss",
           "collect_patches", "pooled_scales", "score_batch", "score_images", "score_loader", "stack_images"]


_FIELDS = ("scores", "patch_term", "image_term", "patch_mean", "pooled", "labels", "maps")


@dataclass
class ScoredSet:
    """Per image: ``scores`` s(x) (N,) (the shipped quality score), ``patch_term`` (N,) top-1 % patch distance,
    ``image_term`` (N,) Mahalanobis distance of the pooled adapted scales, ``patch_mean`` (N,) mean patch
    distance, ``pooled`` (N, 2*L*D) spatial mean and std of the adapted scales (:func:`pooled_scales`),
    ``labels`` (N,) (-1 when unlabeled) and ``maps`` (N, H1, W1) patch scores."""

    scores: np.ndarray
    patch_term: np.ndarray
    image_term: np.ndarray
    patch_mean: np.ndarray
    pooled: np.ndarray
    labels: np.ndarray
    maps: np.ndarray

    @property
    def score_features(self) -> np.ndarray:
        """(N, 4): [s(x), top-1 % patch distance, image term, mean patch distance]."""
        return np.stack([self.scores, self.patch_term, self.image_term, self.patch_mean], axis=1)

    def subset(self, mask: np.ndarray) -> ScoredSet:
        return ScoredSet(*(getattr(self, f)[mask] for f in _FIELDS))


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
def cache_features(model: LowQualityRepresentation, loader: DataLoader, device: torch.device,
                   progress: bool = True) -> FeatureCache:
    """Frozen-backbone features of every image behind ``loader``. In a torchrun job each rank extracts its strided
    share and the shares are gathered back into dataset order, so every rank holds the same cache."""
    model.eval()
    info = dist_info()
    dataset = loader.dataset
    mine = Subset(dataset, shard(range(len(dataset)), info)) if info.distributed else dataset
    part = DataLoader(mine, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers)
    outs, index = [], []
    for b in tqdm(part, desc="features", leave=False, disable=not progress or len(part) < 4):
        outs.append([f.cpu() for f in model.backbone_features(b["image"].to(device))])
        index.append(torch.as_tensor(b["index"]))
    scales = [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))] if outs else []
    if info.distributed:
        gathered = gather_by_index(torch.cat(index), *scales)
        scales = [torch.from_numpy(g) for g in gathered[1:]]
    return FeatureCache(scales, dataset.records)


def _embed(model: LowQualityRepresentation, batch: dict, device: torch.device, adaptors: torch.nn.Module | None = None):
    if "feats" in batch:
        return model.embed(feats=[f.to(device) for f in batch["feats"]], adaptors=adaptors)
    return model.embed(batch["image"].to(device), adaptors=adaptors)


def _rank_share(batch: dict, info) -> tuple[dict, list[int]]:
    """This rank's strided share of a global batch and the share size of every rank."""
    n = len(batch["label"])
    sizes = [len(range(r, n, info.world_size)) for r in range(info.world_size)]
    share = {k: ([f[info.rank :: info.world_size] for f in v] if k == "feats" else v[info.rank :: info.world_size])
             for k, v in batch.items()}
    return share, sizes


def _gather_patches(patches: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """(M_r, E) patches of every rank -> (sum M_r, E), keeping the graph (rows padded to the largest share)."""
    if len(rows) == 1:
        return patches
    pad = max(rows) - patches.shape[0]
    padded = torch.cat([patches, patches.new_zeros(pad, patches.shape[1])]) if pad else patches
    full = all_gather_with_grad(padded).view(len(rows), max(rows), -1)
    return torch.cat([full[r, : rows[r]] for r in range(len(rows))])


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      **loader_seed_kwargs(seed))


def train_one_epoch(model: LowQualityRepresentation, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_cfg: LossConfig, device: torch.device, adaptors: torch.nn.Module | None = None,
                    progress: bool = True) -> dict[str, float]:
    """One pass over the outstanding images; all patches of each image enter the loss. Returns mean terms.

    In a torchrun job every rank walks the same global batches (same seeded order); each embeds its strided share
    through the DDP-wrapped ``adaptors``, the patches are gathered with their graph and every rank evaluates the
    loss of the whole batch. DDP averages the ranks' gradients, which are ``world_size`` times their share's
    contribution (the gather's backward sums over ranks): the average is the single-process gradient."""
    model.train()
    info = dist_info()
    totals: dict[str, float] = {}
    n = 0
    for batch in tqdm(loader, desc="adaptor steps", leave=False, disable=not progress or len(loader) < 8):
        n_img = len(batch["label"])
        share, sizes = _rank_share(batch, info) if info.distributed else (batch, [n_img])
        local = _embed(model, share, device, adaptors).patches
        rows = [size * local.shape[-1] * local.shape[-2] for size in sizes]
        patches = _gather_patches(local.flatten(2).transpose(1, 2).reshape(-1, model.embed_dim), rows)
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


def pooled_scales(emb) -> torch.Tensor:
    """(B, 2 * L * D) spatial mean and spatial standard deviation of every adapted scale: the image-level
    descriptor (the standard deviation sees artefacts that cover only part of the image)."""
    return torch.cat([s.mean(dim=(2, 3)) for s in emb.scales] + [s.std(dim=(2, 3)) for s in emb.scales], dim=1)


@torch.no_grad()
def score_batch(model: LowQualityRepresentation, emb, top_fraction: float = 0.01, aggregate: str = "topk_mean",
                image_weight: float = 0.0, two_sided: bool = True) -> dict[str, torch.Tensor]:
    """Every per-image score of one embedded batch (the :class:`ScoredSet` fields except ``labels``), on CPU."""
    dist = model.distances(emb)
    pooled = pooled_scales(emb)
    patch_term, image_term = image_scores(dist, top_fraction, aggregate), model.image_term(pooled)
    return {"scores": model.combine(patch_term, image_term, image_weight, two_sided).cpu(),
            "patch_term": patch_term.cpu(), "image_term": image_term.cpu(), "patch_mean": dist.mean(1).cpu(),
            "pooled": pooled.cpu(),
            "maps": dist.view(len(dist), *emb.patches.shape[-2:]).cpu()}


@torch.no_grad()
def score_images(model: LowQualityRepresentation, images: torch.Tensor, top_fraction: float = 0.01,
                 aggregate: str = "topk_mean", image_weight: float = 0.0, two_sided: bool = True
                 ) -> dict[str, torch.Tensor]:
    """(B, 3, S, S) images -> :func:`score_batch` (``scores`` is the shipped s(x) when ``image_weight`` is the
    config's)."""
    model.eval()
    return score_batch(model, model.embed(images), top_fraction, aggregate, image_weight, two_sided)


@torch.no_grad()
def score_loader(model: LowQualityRepresentation, loader: DataLoader, device: torch.device, top_fraction: float = 0.01,
                 aggregate: str = "topk_mean", image_weight: float = 0.0, two_sided: bool = True, progress: bool = True
                 ) -> ScoredSet:
    """Score every image of a loader; ``image_weight`` > 0 adds the image-level term to s(x) (``combine``)."""
    model.eval()
    out: dict[str, list] = {k: [] for k in _FIELDS}
    for batch in tqdm(loader, desc="scoring", leave=False, disable=not progress or len(loader) < 4):
        for key, value in score_batch(model, _embed(model, batch, device), top_fraction, aggregate, image_weight,
                                      two_sided).items():
            out[key].append(value)
        out["labels"].append(torch.as_tensor(batch["label"]))
    return ScoredSet(*(torch.cat(out[k]).numpy() for k in _FIELDS))


def stack_images(dataset: Dataset, indices: Sequence[int] | None = None) -> torch.Tensor:
    """(N, 3, S, S) tensor of a dataset's images (no augmentation unless the dataset has it)."""
    indices = range(len(dataset)) if indices is None else indices
    return torch.stack([dataset[i]["image"] for i in indices])
