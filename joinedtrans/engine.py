"""Training and inference loops shared by every stage (pre-training, coarse, fine, fovea). No CLI, no file layout
beyond the run folder it is handed.

A stage trains for a fixed number of optimiser steps (``steps``, or ``epochs`` passes over its dataset). Each
epoch's data order is a function of (seed, epoch) (a ``DistributedSampler`` with explicit rank/world size, also in
a single process) and augmentations draw from ``(seed, epoch, index)``, so ``--resume`` replays a killed run
exactly. After every epoch ``checkpoints/last.pt`` holds the full state of the running stage (``extra.stage``);
a finished stage leaves ``checkpoints/<stage>.pt`` (its selected weights). Evaluation never steps an optimiser
(JOINED's validation loop did).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from common.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from common.rundir import RunDir
from common.runtime import autocast, backward_and_step, dist_info, make_grad_scaler, reduce_mean, wrap_ddp
from common.tracking import Tracker

__all__ = ["Stage", "total_steps", "train_one_epoch", "fit", "predict", "predict_batches", "stage_file"]

LossFn = Callable[[nn.Module, dict, int, int], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Stage:
    """One trainable stage. ``loss(model, batch, step, total_steps) -> (loss, parts)`` runs the forward pass;
    ``validate(model) -> {"score": float, ...}`` (optional) selects the best weights (higher is better)."""

    name: str
    model: nn.Module
    dataset: Dataset
    loss: LossFn
    optimizer: torch.optim.Optimizer
    batch_size: int
    steps: int
    epochs: int
    seed: int
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    val_every: int = 0
    find_unused: bool = True  # timm features_only keeps blocks past the last used level; curriculum phases


def stage_file(run: RunDir, name: str) -> torch.Tensor:
    return run.checkpoints / f"{name}.pt"


def total_steps(steps: int, epochs: int, n: int, batch_size: int) -> int:
    """``steps`` when > 0, else ``epochs`` x batches per epoch."""
    return steps if steps > 0 else epochs * max(1, math.ceil(n / batch_size))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                    device: torch.device, step: int, total: int, amp: str = "off",
                    scaler: torch.amp.GradScaler | None = None, grad_clip: float = 0.0, progress: bool = False,
                    desc: str = "train") -> tuple[dict[str, float], int]:
    """One pass over ``loader``, stopping at ``total`` steps. Returns (mean loss parts, new global step)."""
    model.train()
    sums: dict[str, float] = {}
    n = 0
    for batch in tqdm(loader, disable=not progress, leave=False, desc=desc):
        if step >= total:
            break
        with autocast(device, amp):
            loss, parts = loss_fn(model, _to(batch, device), step, total)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite loss {float(loss)} at step {step}; lower the learning rate")
        backward_and_step(loss, optimizer, scaler, None, grad_clip)
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        step += 1
    return {k: reduce_mean(v / max(n, 1)) for k, v in sums.items()}, step


def _loader(stage: Stage) -> DataLoader:
    info = dist_info()
    sampler = DistributedSampler(stage.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=stage.seed, drop_last=False)
    per_rank = max(1, stage.batch_size // info.world_size)
    return DataLoader(stage.dataset, batch_size=per_rank, sampler=sampler, num_workers=0,
                      drop_last=len(sampler) > per_rank)


def _resume(stage: Stage, resume: dict | None, scaler) -> tuple[int, int, float | None]:
    if resume is None:
        return 0, 0, None
    epoch, step, best = restore_training_state(resume, model=stage.model, optimizer=stage.optimizer, scaler=scaler)
    print(f"[{stage.name}] resumed at epoch {epoch}, step {step}")
    return epoch, step, best


def fit(stage: Stage, run: RunDir, config: dict, device: torch.device, tracker: Tracker, *, amp: str = "off",
        grad_clip: float = 0.0, progress: bool = False, resume: dict | None = None) -> nn.Module:
    """Train ``stage`` to its step budget with per-epoch ``last.pt``; returns the model holding the selected
    weights (best validation score when ``validate`` is given, else the last), also saved as ``<stage>.pt``."""
    info = dist_info()
    loader = _loader(stage)
    total = total_steps(stage.steps, stage.epochs, len(stage.dataset), stage.batch_size)
    epochs = math.ceil(total / max(len(loader), 1))
    scaler = make_grad_scaler(device, amp)
    start, step, best = _resume(stage, resume, scaler)
    train_model = wrap_ddp(stage.model, device, find_unused_parameters=stage.find_unused)
    best_path = run.checkpoints / f"{stage.name}_best.pt"
    for epoch in range(start, epochs):
        tic = time.time()
        loader.sampler.set_epoch(epoch)
        if hasattr(stage.dataset, "set_epoch"):
            stage.dataset.set_epoch(epoch)
        stats, step = train_one_epoch(train_model, loader, stage.loss, stage.optimizer, device, step, total, amp,
                                      scaler, grad_clip, progress and info.is_main, desc=stage.name)
        log = {f"{stage.name}/train_{k}": v for k, v in stats.items()}
        last_epoch = epoch + 1 == epochs
        if stage.validate is not None and (last_epoch or (stage.val_every and (epoch + 1) % stage.val_every == 0)):
            scores = stage.validate(stage.model)
            log |= {f"{stage.name}/val_{k}": v for k, v in scores.items()}
            if best is None or scores["score"] > best:
                best = scores["score"]
                if info.is_main:
                    save_checkpoint(best_path, model=stage.model, config=config, epoch=epoch + 1, step=step,
                                    best_metric=best, extra={"stage": stage.name})
        tracker.log(log, step=step)
        if info.is_main:
            save_checkpoint(run.checkpoints / "last.pt", model=stage.model, config=config, epoch=epoch + 1,
                            step=step, best_metric=best, optimizer=stage.optimizer, scaler=scaler,
                            extra={"stage": stage.name})
            loss = stats.get("loss", float("nan"))
            print(f"[{stage.name}] epoch {epoch + 1}/{epochs} step {step}/{total} loss {loss:.4f} "
                  f"{time.time() - tic:.1f}s", flush=True)
    return _finish(stage, run, config, best_path, step, best)


def _finish(stage: Stage, run: RunDir, config: dict, best_path, step: int, best: float | None) -> nn.Module:
    from common.runtime import barrier

    barrier()
    if best_path.is_file():
        stage.model.load_state_dict(load_checkpoint(best_path)["model"])
    if dist_info().is_main:
        save_checkpoint(stage_file(run, stage.name), model=stage.model, config=config, epoch=0, step=step,
                        best_metric=best, extra={"stage": stage.name})
    barrier()
    return stage.model


@torch.no_grad()
def predict_batches(model: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 8,
                    amp: str = "off") -> list:
    """Run ``model`` over ``(N, C, H, W)`` inputs in eval mode; returns the per-batch outputs moved to the CPU
    (tensors, or dicts of tensors) as float32 numpy."""
    model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        with autocast(device, amp):
            y = model(inputs[i:i + batch_size].to(device))
        out.append({k: v.float().cpu().numpy() for k, v in y.items()} if isinstance(y, dict)
                   else y.float().cpu().numpy())
    return out


def predict(model: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 8, amp: str = "off"
            ) -> tuple[np.ndarray, None, dict[str, np.ndarray] | np.ndarray]:
    """``(indices, targets, outputs)``: outputs concatenated over batches (dict of arrays for the coarse net)."""
    parts = predict_batches(model, inputs, device, batch_size, amp)
    if parts and isinstance(parts[0], dict):
        outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        outputs = np.concatenate(parts) if parts else np.zeros((0,))
    return np.arange(len(inputs)), None, outputs
