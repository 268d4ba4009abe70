"""Training and evaluation loops of the official recipe (official train.py, modules/scheduler.py, utils/metrics.py):
AdamW, per-iteration half-cycle cosine LR, gradient clipping at 1.0, cross-entropy; metrics (AUC macro one-vs-rest on
raw logits as torcheval computed it for both papers, also on probabilities; accuracy, macro F1, quadratic kappa
``qwk``, unweighted ``kappa``) and the efficiency scores PPE/PME (FPT paper, official utils/peme.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import auc_per_class, classification_metrics, softmax_np
from common.runtime import autocast, backward_and_step, gather_by_index, reduce_mean, unwrap_model

__all__ = ["cosine_factor", "make_scheduler", "make_optimizer", "prepare_batch", "train_one_epoch", "predict",
           "evaluate", "compute_metrics", "ppe", "pme"]


def cosine_factor(epoch: float, epochs: float, warmup_epochs: float = 0.0) -> float:
    """LR multiplier at fractional ``epoch`` = epoch + step / steps_per_epoch: linear warm-up, then
    ``0.5 (1 + cos(pi (e - w) / (E - w)))`` (1 at e = w, 0.5 at the middle, -> 0 at E)."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - warmup_epochs) / span)))


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration cosine schedule (call ``step()`` after every optimiser step)."""
    steps = max(1, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: cosine_factor(it / steps, epochs, warmup_epochs))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: Iterable[float]) -> torch.optim.AdamW:
    """AdamW over the learnable parameters only, weight decay on all of them (no bias/norm exclusion, as official)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no learnable parameter")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def prepare_batch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensors to ``device``; cached ``keys``/``values`` go from loader order (B, L, ...) to (L, B, ...)."""
    out = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if name in ("keys", "values"):
                value = value.transpose(0, 1)
        out[name] = value
    return out


def _inputs(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in unwrap_model(model).input_keys}


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, *, grad_clip: float = 1.0,
                    amp: str = "off", scaler: torch.amp.GradScaler | None = None, progress: bool = False
                    ) -> dict[str, float]:
    """One epoch; returns ``{"loss": mean loss, "lr": last lr, "steps": n}``."""
    from tqdm import tqdm

    model.train()
    criterion = nn.CrossEntropyLoss()
    total, steps = 0.0, 0
    for batch in tqdm(loader, leave=False, desc="train", disable=not progress):
        batch = prepare_batch(batch, device)
        with autocast(device, amp):
            logits = model(**_inputs(model, batch))
            loss = criterion(logits.float(), batch["label"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {steps}; lower optim.lr")
        backward_and_step(loss, optimizer, scaler, [p for p in model.parameters() if p.requires_grad], grad_clip)
        scheduler.step()
        total += float(loss.detach())
        steps += 1
    return {"loss": reduce_mean(total / max(steps, 1)), "lr": optimizer.param_groups[0]["lr"], "steps": steps}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device, amp: str = "off", progress: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of a loader, gathered over ranks in dataset order: ``(indices (N,), targets (N,), outputs (N, C))``."""
    from tqdm import tqdm

    model.eval()
    idx, labels, logits = [], [], []
    for batch in tqdm(loader, leave=False, desc="predict", disable=not progress):
        batch = prepare_batch(batch, device)
        with autocast(device, amp):
            out = model(**_inputs(model, batch))
        idx.append(batch["index"].cpu())
        labels.append(batch["label"].cpu())
        logits.append(out.float().cpu())
    return gather_by_index(torch.cat(idx), torch.cat(labels), torch.cat(logits))


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, amp: str = "off",
             progress: bool = False) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``predict`` + ``compute_metrics``: ``(metrics, (indices, targets, logits))``."""
    idx, labels, logits = predict(model, loader, device, amp, progress)
    return compute_metrics(labels, logits, num_classes), (idx, labels, logits)


def compute_metrics(labels: np.ndarray, logits: np.ndarray, num_classes: int) -> dict[str, Any]:
    """``auc`` = macro one-vs-rest AUC on raw logits over every class column (the papers' torcheval definition, also
    for binary tasks); ``auc_prob`` = the same on softmax probabilities (binary: AUC of p(class 1)); accuracy,
    balanced accuracy, macro F1, ``qwk`` (quadratic kappa), ``kappa`` (unweighted Cohen's kappa), per-class AUC and
    the confusion matrix."""
    from sklearn.metrics import cohen_kappa_score

    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    base = classification_metrics(labels, softmax_np(logits), num_classes=num_classes)
    per_class_logit = auc_per_class(labels, logits)
    return {
        "auc": float(np.nanmean(per_class_logit)) if np.isfinite(per_class_logit).any() else float("nan"),
        "auc_prob": base["auc"],
        "accuracy": base["accuracy"],
        "balanced_accuracy": base["balanced_accuracy"],
        "f1_macro": base["f1_macro"],
        "qwk": base["kappa_quadratic"],
        "kappa": float(cohen_kappa_score(labels, logits.argmax(1))) if num_classes > 1 else float("nan"),
        "auc_per_class": per_class_logit,
        "confusion_matrix": base["confusion_matrix"],
    }


def ppe(score: float, learnable_fraction: float) -> float:
    """Parameter-efficiency score ``score * exp(-log10(r + 1))``, r = learnable fraction (FPT paper, utils/peme.py)."""
    return float(score * math.exp(-math.log10(learnable_fraction + 1.0)))


def pme(score: float, memory: float, memory_full_finetune: float) -> float:
    """Memory-efficiency score ``score * exp(-log10(m / m_FT + 1))``."""
    return float(score * math.exp(-math.log10(memory / memory_full_finetune + 1.0)))
