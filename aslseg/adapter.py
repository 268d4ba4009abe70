"""Stage 3 of ASLseg: the adaptation network that "refines the SAM-predictions" (OURS: the paper gives no design).

A MONAI 2D UNet on three channels (CT slice, SAM probability, SSL probability) -> tumour logits. It is trained on
labelled slices only, with "synthetic pseudo-labels": the ground truth, corrupted the way SSL predictions fail
(:func:`corrupt_mask`: erosion or dilation by 1-``morph_max`` px, an elastic boundary jitter, a missed lesion
with p ``drop_prob``, a false-positive blob inside the liver with p ``blob_prob``), plays the SSL channel and,
through its boxes, SAM's prompt; the target is the ground truth. Loss Dice + CE, Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from scipy import ndimage

from aslseg.prompts import components
from aslseg.semisup import dice_ce_loss
from aslseg.settings import AdapterConfig
from common.runtime import dist_info, wrap_ddp

__all__ = ["build_adapter", "corrupt_mask", "AdapterPool", "adapter_input", "train_adapter", "refine"]


def build_adapter(cfg: AdapterConfig) -> UNet:
    """UNet ``(B, 3, H, W)`` (CT, SAM prob, SSL prob) -> ``(B, 2, H, W)`` tumour logits."""
    return UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=tuple(cfg.channels),
                strides=tuple(cfg.strides), num_res_units=cfg.num_res_units)


def _elastic(mask: np.ndarray, rng: np.random.Generator, amplitude: float = 1.5) -> np.ndarray:
    h, w = mask.shape
    dx = ndimage.gaussian_filter(rng.standard_normal((h, w)), 3) * amplitude * 3
    dy = ndimage.gaussian_filter(rng.standard_normal((h, w)), 3) * amplitude * 3
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    return ndimage.map_coordinates(mask.astype(np.float32), [rows + dy, cols + dx], order=1) > 0.5


def _blob(liver: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cand = np.argwhere(liver)
    out = np.zeros(liver.shape, bool)
    if len(cand) == 0:
        return out
    r, c = cand[int(rng.integers(len(cand)))]
    ra, rb = rng.uniform(1.5, 5.0, size=2)
    rows, cols = np.mgrid[: liver.shape[0], : liver.shape[1]]
    out = ((rows - r) / ra) ** 2 + ((cols - c) / rb) ** 2 <= 1.0
    return out & liver


def corrupt_mask(gt: np.ndarray, liver: np.ndarray, rng: np.random.Generator, cfg: AdapterConfig) -> np.ndarray:
    """A plausible wrong prediction of a binary tumour mask ``(H, W)`` (see module docstring)."""
    mask = np.asarray(gt, bool).copy()
    if mask.any() and cfg.morph_max > 0:
        radius = int(rng.integers(1, cfg.morph_max + 1))
        op = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
        mask = op(mask, iterations=radius)
    if mask.any():
        mask = _elastic(mask, rng)
    comps = components(mask)
    if comps and rng.random() < cfg.drop_prob:
        mask &= ~comps[int(rng.integers(len(comps)))]
    if rng.random() < cfg.blob_prob:
        mask |= _blob(np.asarray(liver, bool), rng)
    return mask


@dataclass
class AdapterPool:
    """Training material: ``images``, ``sam_probs``, ``ssl_probs`` and ``targets``, all ``(N, H, W)`` float32."""

    images: np.ndarray
    sam_probs: np.ndarray
    ssl_probs: np.ndarray
    targets: np.ndarray


def adapter_input(images: np.ndarray, sam_probs: np.ndarray, ssl_probs: np.ndarray) -> torch.Tensor:
    """Stack the three ``(N, H, W)`` channels into ``(N, 3, H, W)``; the CT channel is centred like the
    segmenter's input is not (it sees [0, 1]); all channels stay in [0, 1]."""
    return torch.from_numpy(np.stack([images, sam_probs, ssl_probs], axis=1).astype(np.float32))


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if rng.random() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    k = int(rng.integers(4))
    return torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))


def train_adapter(model: torch.nn.Module, pool: AdapterPool, cfg: AdapterConfig, seed: int,
                  device: torch.device) -> list[float]:
    """``cfg.steps`` Adam steps of Dice + CE on random pool items (flip/rot90 augmented); returns the losses.
    Under torchrun the model is DDP-wrapped (rank 0's initialisation) and each rank trains on its equal contiguous
    share of every step's batch (the draws are those of one process, so independent of the rank)."""
    info = dist_info()
    if cfg.batch_size % info.world_size:
        raise ValueError(f"adapter.batch_size={cfg.batch_size} must be a multiple of the {info.world_size} ranks")
    per = cfg.batch_size // info.world_size
    model.to(device).train()
    train_model = wrap_ddp(model, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_all = adapter_input(pool.images, pool.sam_probs, pool.ssl_probs)
    y_all = torch.from_numpy(pool.targets.astype(np.int64))
    losses = []
    for step in range(cfg.steps):
        rng = np.random.default_rng([seed, 313, step])
        idx = rng.integers(0, len(x_all), size=cfg.batch_size)[info.rank * per:(info.rank + 1) * per]
        x, y = _augment(x_all[idx], y_all[idx], rng)
        loss = dice_ce_loss(train_model(x.to(device)), y.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"adapter: non-finite loss at step {step}; lower adapter.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def refine(model: torch.nn.Module, images: np.ndarray, sam_probs: np.ndarray, ssl_probs: np.ndarray,
           device: torch.device, batch: int = 32) -> np.ndarray:
    """Refined tumour probability ``(N, H, W)``."""
    model.eval()
    x = adapter_input(images, sam_probs, ssl_probs)
    out = [F.softmax(model(x[i:i + batch].to(device)), dim=1)[:, 1].cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy().astype(np.float32)
