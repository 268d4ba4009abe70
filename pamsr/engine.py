"""Training and evaluation loops (official ``src/trainer_burst_ema.py``: ``train`` and ``test``). No CLI here.

Evaluation protocol (official): SR clamped to [0, 1] and quantised to 1/255, PSNR (``data_range=1``) and SSIM
(7x7 window) on the whole zero-padded polar image, averaged over the held-out fold. We add the same metrics after
scan conversion to Cartesian (padding removed first), against the noise-free ground truth where the data have one
(``*_clean``: the synthetic set; the official target is the median-filtered noisy scan), and on "displaced" LR inputs
(odd LR rows shifted by a seeded random offset, the degradation the displacement augmentation is meant to handle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.metrics import psnr, ssim
from common.runtime import autocast, backward_and_step, unwrap_model
from pamsr.data import check_pair
from pamsr.degradation import displace_odd_rows
from pamsr.geometry import polar_to_cartesian, unpad_image
from pamsr.inference import super_resolve

__all__ = ["WeightEMA", "train_one_epoch", "quantise", "image_metrics", "predict_image", "predict", "displaced_images",
           "evaluate"]


def train_one_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device, amp: str = "off",
                    scaler: torch.amp.GradScaler | None = None, grad_clip: float = 0.0, max_steps: int | None = None,
                    progress: bool = False, desc: str = "train",
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, ema: WeightEMA | None = None
                    ) -> dict[str, float]:
    """One pass over ``loader`` (batches of ``lr`` ``(B, 1, p, p)``, ``hr`` ``(B, 1, sp, sp)``) -> mean losses and
    ``steps`` (the number of optimiser steps taken). ``scheduler`` is stepped after every optimiser step."""
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for batch in tqdm(loader, disable=not progress, leave=False, desc=desc):
        lr, hr = batch["lr"].to(device), batch["hr"].to(device)
        with autocast(device, amp):
            sr = model(lr)
        loss, parts = loss_fn(sr.float(), hr, batch["corner"].to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {float(loss)} at step {steps}; lower optim.lr")
        backward_and_step(loss, optimizer, scaler, model.parameters(), grad_clip)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    return {k: v / max(steps, 1) for k, v in sums.items()} | {"steps": float(steps)}


class WeightEMA:
    """Exponential moving average of a model's floating-point state (``shadow = d * shadow + (1 - d) * w`` after
    every optimiser step; integer buffers copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in unwrap_model(model).state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)


def quantise(image: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] and round to 1/255 steps (official metric protocol)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0


def image_metrics(sr: np.ndarray, hr: np.ndarray, pad: int, cartesian: bool = True,
                  clean: np.ndarray | None = None) -> dict[str, float]:
    """PSNR/SSIM of a padded ``(H, W)`` SR polar image against its HR: polar (official) and Cartesian; with the
    noise-free ground truth ``clean`` also ``psnr_clean`` / ``ssim_clean`` (same padded polar frame)."""
    sr_q = quantise(sr)
    out = {"psnr": psnr(sr_q, hr, data_range=1.0), "ssim": ssim(sr_q, hr, data_range=1.0)}
    if clean is not None:
        out |= {"psnr_clean": psnr(sr_q, clean, data_range=1.0), "ssim_clean": ssim(sr_q, clean, data_range=1.0)}
    if cartesian:
        c_sr, c_hr = polar_to_cartesian(unpad_image(sr_q, pad)), polar_to_cartesian(unpad_image(hr, pad))
        out |= {"psnr_cart": psnr(c_sr, c_hr, data_range=1.0), "ssim_cart": ssim(c_sr, c_hr, data_range=1.0)}
    return out


def predict_image(model: nn.Module, lr: np.ndarray, scale: int, device: torch.device, tiled: bool, tile: int,
                  overlap: int, amp: str = "off", self_ensemble: bool = False) -> np.ndarray:
    """``(h, w)`` LR in [0, 1] -> ``(h*s, w*s)`` SR in [0, 1] (float32)."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None].to(device)
    with autocast(device, amp):
        sr = super_resolve(model, x, scale, tiled, tile, overlap, self_ensemble)
    return sr[0, 0].float().cpu().numpy()


def predict(model: nn.Module, images: Sequence, scale: int, device: torch.device, *, tiled: bool = True,
            tile: int = 64, overlap: int = 48, amp: str = "off", progress: bool = False, self_ensemble: bool = False
            ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Super-resolve every ``PolarImage`` -> ``(indices, targets, outputs)``: case names, padded HR ``(H, W)`` and SR
    ``(H, W)`` in [0, 1]."""
    names, targets, outputs = [], [], []
    for item in tqdm(images, desc="predict", disable=not progress, leave=False):
        check_pair(item.lr, item.hr, scale, item.name)
        names.append(item.name)
        targets.append(item.hr)
        outputs.append(predict_image(model, item.lr, scale, device, tiled, tile, overlap, amp, self_ensemble))
        check_pair(item.lr, outputs[-1], scale, f"{item.name} (network output)")
    return names, targets, outputs


def displaced_images(images: Sequence, max_shift: int, seed: int) -> list:
    """Copies of ``images`` whose LR odd rows are shifted by a seeded offset in ``[-m, m] \\ {0}`` (image ``i`` uses
    ``default_rng([seed, 7, i])``): the degradation the displacement augmentation is meant to absorb."""
    out = []
    for i, item in enumerate(images):
        lr, _ = displace_odd_rows(item.lr, np.random.default_rng([seed, 7, i]), p=1.0, max_shift=max_shift)
        out.append(replace(item, lr=lr))
    return out


def evaluate(model: nn.Module, images: Sequence, scale: int, pad: int, device: torch.device, *, tiled: bool = True,
             tile: int = 64, overlap: int = 48, cartesian: bool = True, displaced_shift: int = 0, seed: int = 0,
             amp: str = "off", keep_predictions: bool = False, progress: bool = False, self_ensemble: bool = False
             ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Per-image metrics on ``images`` (``PolarImage``). With ``displaced_shift > 0`` the metrics are repeated on
    displaced LR inputs (:func:`displaced_images`, columns ``*_displaced``).

    Returns ``(rows, predictions)``; ``predictions`` maps image name -> SR ``(H, W)`` when ``keep_predictions``.
    """
    run = {"tiled": tiled, "tile": tile, "overlap": overlap, "amp": amp, "progress": progress,
           "self_ensemble": self_ensemble}
    names, targets, outputs = predict(model, images, scale, device, **run)
    rows = [{"case": n, **image_metrics(sr, hr, pad, cartesian, item.clean)}
            for n, hr, sr, item in zip(names, targets, outputs, images)]
    if displaced_shift > 0:
        _, _, shifted = predict(model, displaced_images(images, displaced_shift, seed), scale, device, **run)
        for row, hr, sr, item in zip(rows, targets, shifted, images):
            m = image_metrics(sr, hr, pad, cartesian=False, clean=item.clean)
            row |= {"psnr_displaced": m["psnr"], "ssim_displaced": m["ssim"]}
            row |= {"psnr_clean_displaced": m["psnr_clean"]} if "psnr_clean" in m else {}
    return rows, (dict(zip(names, outputs)) if keep_predictions else {})
