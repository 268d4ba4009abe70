"""Pre-training step and loop of PRIOR's three stages (official ``codes/prior/models/prior.py``:
``on_train_epoch_start``, ``call_optimization``, ``training_step``), in plain PyTorch.

Each stage rebuilds AdamW and a per-iteration schedule (linear warm-up from ``lr_start`` to ``lr``, then cosine to
0, as pl_bolts' ``LinearWarmupCosineAnnealingLR``), so optimizer state is empty at every stage start.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader

from common.runtime import autocast, backward_and_step, reduce_mean
from prior.settings import StageConfig

__all__ = ["stage_of_epoch", "stage_start_epochs", "warmup_cosine", "make_optimizer", "make_scheduler",
           "train_one_epoch", "collect_sentence_embeddings"]


def stage_start_epochs(stages: Sequence[StageConfig]) -> list[int]:
    """First epoch of each stage: ``[0, e1, e1 + e2]``."""
    starts, total = [], 0
    for s in stages:
        starts.append(total)
        total += s.epochs
    return starts


def stage_of_epoch(stages: Sequence[StageConfig], epoch: int) -> tuple[int, int]:
    """``(stage 1..3, epoch within that stage)`` of a global epoch index (stages with 0 epochs are skipped)."""
    for k, start in reversed(list(enumerate(stage_start_epochs(stages)))):
        if epoch >= start and stages[k].epochs > 0:
            return k + 1, epoch - start
    raise ValueError(f"epoch {epoch} lies before every stage")


def warmup_cosine(step: int, total: int, warmup: int, lr: float, lr_start: float) -> float:
    """LR at iteration ``step`` of a stage of ``total`` iterations: linear ``lr_start -> lr`` over ``warmup``
    iterations, then half a cosine from ``lr`` to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return lr_start + (lr - lr_start) * step / warmup
    span = max(total - warmup, 1)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW on every trainable parameter, one weight decay for all (official ``exclude_bn_bias: False``)."""
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig, iters_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration warm-up cosine of one stage (factor of the stage's peak LR)."""
    total = max(stage.epochs * iters_per_epoch, 1)
    warmup = int(round(stage.warmup_epochs * iters_per_epoch))
    for group in optimizer.param_groups:
        group["lr"] = stage.lr
        group["initial_lr"] = stage.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: warmup_cosine(t, total, warmup, stage.lr, stage.lr_start) / stage.lr)


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, stage: int, device: torch.device, *,
                    amp: str = "off", scaler: torch.amp.GradScaler | None = None, grad_clip: float = 0.0,
                    progress: bool = False) -> dict[str, float]:
    """One epoch of stage ``stage``; returns the mean of every loss term (averaged over ranks) and ``steps``."""
    model.train()
    sums: dict[str, float] = defaultdict(float)
    steps = 0
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"stage {stage}", leave=False)
    for batch in batches:
        with autocast(device, amp):
            terms = model(batch["image"].to(device, non_blocking=True), batch["sentences"], stage)
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"stage {stage}: non-finite loss {({k: float(v) for k, v in terms.items()})}")
        backward_and_step(terms["loss"], optimizer, scaler, grad_clip=grad_clip)
        scheduler.step()
        for key, value in terms.items():
            sums[key] += float(value.detach())
        steps += 1
    out = {k: reduce_mean(v / max(steps, 1)) for k, v in sums.items()}
    out["steps"] = steps
    return out


@torch.no_grad()
def collect_sentence_embeddings(model, loader: DataLoader, device: torch.device, limit: int = 4096) -> torch.Tensor:
    """Projected sentence embeddings of up to ``limit`` sentences (for the SPB k-means initialisation)."""
    model.eval()
    out, n = [], 0
    for batch in loader:
        sentences, mask = model.encode_sentences(batch["sentences"])
        out.append(sentences[mask].float().cpu())
        n += out[-1].shape[0]
        if n >= limit:
            break
    model.train()
    return torch.cat(out)[:limit]
