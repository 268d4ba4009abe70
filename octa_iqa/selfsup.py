"""Backbone pre-training from scratch on outstanding images only (our no-pretrained-weights path; not in the paper).

The paper's representation module very likely starts from ImageNet weights, which cannot be downloaded here. Instead
of pretending a random network is a feature extractor, the backbone is trained on the outstanding training images
with VICReg (Bardes et al., ICLR 2022): invariance between two views + a variance floor + a covariance penalty,
an objective that cannot collapse to a constant. The views differ only by a random crop at native resolution,
flips, 90-degree rotations and a +-5 % brightness change, never by blur, noise, lines or intensity drops (the
anomalies), so the features are not taught to ignore what quality assessment must see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from octa_iqa.settings import SelfSupConfig

__all__ = ["vicreg_loss", "make_views", "pretrain_backbone"]


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, cfg: SelfSupConfig) -> dict[str, torch.Tensor]:
    """VICReg on projections (B, P) of two views; returns ``loss`` and its three terms."""
    sim = F.mse_loss(z1, z2)
    var = 0.0
    cov = 0.0
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        var = var + F.relu(1 - std).mean() / 2
        c = (z.T @ z) / max(z.shape[0] - 1, 1)
        off = c - torch.diag(torch.diag(c))
        cov = cov + (off**2).sum() / z.shape[1] / 2
    loss = cfg.sim_weight * sim + cfg.var_weight * var + cfg.cov_weight * cov
    return {"loss": loss, "sim": sim.detach(), "var": torch.as_tensor(var).detach(),
            "cov": torch.as_tensor(cov).detach()}


def make_views(images: torch.Tensor, crop_fraction: float, gen: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, c, c) random native-resolution crops with random flips, rot90 and brightness."""
    b, _, s, _ = images.shape
    c = max(8, int(round(crop_fraction * s)))
    out = []
    for i in range(b):
        top, left = (int(v) for v in torch.randint(0, s - c + 1, (2,), generator=gen))
        view = images[i, :, top : top + c, left : left + c]
        if torch.rand(1, generator=gen) < 0.5:
            view = view.flip(-1)
        if torch.rand(1, generator=gen) < 0.5:
            view = view.flip(-2)
        view = torch.rot90(view, int(torch.randint(0, 4, (1,), generator=gen)), dims=(-2, -1))
        out.append(view * (1 + 0.1 * (float(torch.rand(1, generator=gen)) - 0.5)))
    return torch.stack(out)


def pretrain_backbone(backbone: nn.Module, images: torch.Tensor, cfg: SelfSupConfig, device: torch.device,
                      seed: int = 0, log: Sequence | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Train ``backbone`` (features_only) in place with VICReg on (N, 3, S, S) outstanding images; the deepest
    scale is pooled and projected (MLP C -> P -> P). Returns the per-epoch loss history."""
    gen = torch.Generator().manual_seed(seed)
    channels = backbone.feature_info.channels()[-1]
    projector = nn.Sequential(nn.Linear(channels, cfg.proj_dim), nn.BatchNorm1d(cfg.proj_dim), nn.ReLU(inplace=True),
                              nn.Linear(cfg.proj_dim, cfg.proj_dim)).to(device)
    backbone.to(device).train()
    for p in backbone.parameters():
        p.requires_grad_(True)
    params = list(backbone.parameters()) + list(projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(images) / cfg.batch_size)))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs * steps_per_epoch))
    history = []
    for epoch in tqdm(range(cfg.epochs), desc="selfsup epochs", leave=False, disable=not progress):
        order = torch.randperm(len(images), generator=gen)
        totals: dict[str, float] = {}
        for start in range(0, len(images), cfg.batch_size):
            batch = images[order[start : start + cfg.batch_size]]
            if len(batch) < 2:
                continue
            v1 = make_views(batch, cfg.crop_fraction, gen).to(device)
            v2 = make_views(batch, cfg.crop_fraction, gen).to(device)
            z1 = projector(backbone(v1)[-1].mean(dim=(2, 3)))
            z2 = projector(backbone(v2)[-1].mean(dim=(2, 3)))
            terms = vicreg_loss(z1, z2, cfg)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / steps_per_epoch
        history.append(totals)
        print(f"[selfsup] epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in totals.items()),
              flush=True)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return history
