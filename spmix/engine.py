"""One training epoch, prediction and evaluation for SPMix and its baselines (paper Sec. II-C, Fig. 1).

Every method is a small step function ``(model, inst, bal, ctx) -> StepOutput`` on a batch from the instance
loader (``inst``) and, where needed, one from the class-balanced loader (``bal``). The loop, loss and optimiser
are shared, so methods differ only in sampler, mixing and loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from common.runtime import backward_and_step
from spmix.data import CLASSES
from spmix.losses import LabelQueue, PaCoLoss
from spmix.mixing import (
    cmo,
    cutmix,
    mix_pixels,
    mix_tokens,
    mixing_ratio,
    mixup,
    one_hot,
    order_pair,
    patch_scores,
    saliencymix,
)
from spmix.model import SPMixNet

Batch = dict[str, torch.Tensor]


@dataclass
class StepContext:
    """Everything a step function may need besides the batches."""

    num_classes: int
    epoch: int
    epochs: int
    rng: np.random.Generator
    generator: torch.Generator
    cfg: object                        # spmix.settings.Config
    two_views: bool = False
    last_ratio: dict = field(default_factory=dict)


@dataclass
class StepOutput:
    logits: torch.Tensor               # (B, C) query-view logits
    targets: torch.Tensor              # (B, C) soft targets
    labels: torch.Tensor | None = None # (B,) hard labels (None when labels are mixed)
    feat_q: torch.Tensor | None = None # (B, D) query features (two-view losses)
    feat_k: torch.Tensor | None = None # (B, D) key features
    logits_k: torch.Tensor | None = None


def _plain(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    """CE / re-sampling / re-weighting / balanced softmax: no mixing."""
    y = inst["label"]
    feat_q = model.encode(inst["image"])
    out = StepOutput(model.classifier(feat_q), one_hot(y, ctx.num_classes), y, feat_q)
    if ctx.two_views:
        out.feat_k = model.encode(inst["image_k"])
        out.logits_k = model.classifier(out.feat_k)
    return out


def _soft(model: SPMixNet, x: torch.Tensor, targets: torch.Tensor) -> StepOutput:
    return StepOutput(model(x), targets)


def step_mixup(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    x, t = mixup(inst["image"], inst["label"], ctx.num_classes, ctx.cfg.baselines.mixup_alpha, ctx.rng)
    return _soft(model, x, t)


def step_cutmix(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    x, t = cutmix(inst["image"], inst["label"], ctx.num_classes, ctx.cfg.baselines.cutmix_alpha, ctx.rng)
    return _soft(model, x, t)


def step_saliencymix(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    x, t = saliencymix(inst["image"], inst["sal"], inst["label"], ctx.num_classes,
                       ctx.cfg.baselines.saliencymix_alpha, ctx.rng)
    return _soft(model, x, t)


def step_cmo(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    b = ctx.cfg.baselines
    active = b.cmo_start_epoch <= ctx.epoch < ctx.epochs - b.cmo_stop_before_end
    x, t = cmo(inst["image"], inst["label"], bal["image"], bal["label"], ctx.num_classes, b.cmo_alpha,
               b.cmo_prob if active else 0.0, ctx.rng)
    return _soft(model, x, t)


def spmix_active(ctx: StepContext) -> bool:
    s = ctx.cfg.spmix
    in_window = s.start_epoch <= ctx.epoch < ctx.epochs - s.stop_before_end
    return in_window and ctx.rng.random() < s.prob


def spmix_features(model: SPMixNet, x_dom: torch.Tensor, sal_dom: torch.Tensor, x_ctx: torch.Tensor,
                   sal_ctx: torch.Tensor, ctx: StepContext, active: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix one view and encode it: images ``(B,3,H,W)``, saliency ``(B,1,H,W)`` -> (features ``(B,D)``, ratio
    ``(B,N)``). Token level inside a hybrid backbone, pixel level for CNNs (``spmix.level``)."""
    s = ctx.cfg.spmix
    patch = ctx.cfg.saliency.patch
    if active:
        scores_dom = patch_scores(sal_dom, patch, ctx.cfg.saliency.tie_noise, ctx.generator)
        scores_ctx = patch_scores(sal_ctx, patch, ctx.cfg.saliency.tie_noise, ctx.generator)
        ratio = mixing_ratio(scores_dom, scores_ctx, s.alpha).to(x_dom.device)
    else:
        n = (x_dom.shape[-2] // patch) * (x_dom.shape[-1] // patch)
        ratio = torch.ones(x_dom.shape[0], n, device=x_dom.device)
    level = s.level if s.level != "auto" else ("token" if model.token_level else "pixel")
    if level == "token":
        tokens = model.tokens(torch.cat([x_dom, x_ctx]))
        z_dom, z_ctx = tokens.split(x_dom.shape[0])
        if z_dom.shape[1] != ratio.shape[1]:
            raise ValueError(f"token grid ({z_dom.shape[1]} tokens) != saliency patch grid ({ratio.shape[1]}); "
                             f"saliency.patch must equal the backbone stride (16)")
        return model.encode_tokens(mix_tokens(z_dom, z_ctx, ratio)), ratio
    return model.encode(mix_pixels(x_dom, x_ctx, ratio, patch)), ratio


def step_spmix(model: SPMixNet, inst: Batch, bal: Batch | None, ctx: StepContext) -> StepOutput:
    """SPMix: dominant/context by the label rule, per-patch ratio from saliency, hard label of the dominant."""
    rule = ctx.cfg.spmix.dominant
    active = spmix_active(ctx)
    pair = order_pair((inst["image"], inst["sal"], inst["label"]), (bal["image"], bal["sal"], bal["label"]), rule)
    feat_q, ratio = spmix_features(model, pair.x_dom, pair.sal_dom, pair.x_ctx, pair.sal_ctx, ctx, active)
    ctx.last_ratio = {"ratio": ratio.detach(), "active": active}
    y = pair.y_dom
    out = StepOutput(model.classifier(feat_q), one_hot(y, ctx.num_classes), y, feat_q)
    if ctx.two_views:
        pk = order_pair((inst["image_k"], inst["sal_k"], inst["label"]), (bal["image_k"], bal["sal_k"], bal["label"]),
                        rule)
        out.feat_k, _ = spmix_features(model, pk.x_dom, pk.sal_dom, pk.x_ctx, pk.sal_ctx, ctx, active)
        out.logits_k = model.classifier(out.feat_k)
    return out


STEPS: dict[str, Callable[[SPMixNet, Batch, Batch | None, StepContext], StepOutput]] = {
    "none": _plain, "mixup": step_mixup, "cutmix": step_cutmix, "saliencymix": step_saliencymix,
    "cmo": step_cmo, "spmix": step_spmix,
}
NEEDS_BALANCED = ("spmix", "cmo")


def paco_loss(model: SPMixNet, out: StepOutput, criterion: PaCoLoss, queue: LabelQueue, faithful_code: bool
              ) -> torch.Tensor:
    """PaCo on [q; k; queue] (GPaCo ``LT/losses.py``, as the released script uses it). Queries go through
    projector + predictor, keys through the projector.
    Under torchrun the keys of every rank are enqueued (as PaCo/MoCo do), so all ranks keep the same queue."""
    from common.runtime import all_gather_tensor

    q = model.contrastive(out.feat_q, query=True)
    k = model.contrastive(out.feat_k, query=False)
    queued, queued_labels = queue.contents()
    features = torch.cat([q, k, queued.to(q.dtype)])
    labels = torch.cat([out.labels, out.labels, queued_labels])
    logits_k = out.logits if faithful_code else out.logits_k
    loss = criterion(features, labels, torch.cat([out.logits, logits_k]))
    queue.push(all_gather_tensor(k.detach()), all_gather_tensor(out.labels))
    return loss


class TrainStep(nn.Module):
    """One training step's forward (mixing, network, loss) as a single module call: ``(inst, bal) -> (loss,
    logits, targets)``. DistributedDataParallel synchronises the gradients of what runs inside ``forward``, and the
    step functions call the network's parts (``tokens``, ``encode_tokens``, heads) rather than its ``forward``.

    Only ``model`` is a sub-module: the losses and the PaCo queue stay outside DDP's buffer broadcast.
    """

    def __init__(self, model: SPMixNet, step: Callable, criterion: nn.Module, ctx: StepContext,
                 paco: tuple[PaCoLoss, LabelQueue] | None = None):
        super().__init__()
        self.model = model
        self.step, self.ctx = step, ctx
        self._losses = (criterion, paco)  # a tuple: not registered as sub-modules

    def forward(self, inst: Batch, bal: Batch | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        criterion, paco = self._losses
        out = self.step(self.model, inst, bal, self.ctx)
        if paco is not None:
            loss = paco_loss(self.model, out, paco[0], paco[1], self.ctx.cfg.loss.paco.faithful_code)
        else:
            loss = criterion(out.logits, out.targets)
        return loss, out.logits.detach(), out.targets


def start_epoch(ctx: StepContext, epoch: int, seed: int, rank: int = 0) -> None:
    """Reset the step functions' random streams (mixing coins, Beta draws, tie noise) to a function of
    (seed, epoch, rank), so that a resumed epoch draws exactly what an uninterrupted one would."""
    from common.seed import epoch_seed

    ctx.epoch = epoch
    ctx.rng = np.random.default_rng(epoch_seed(seed, epoch, salt=10 + rank))
    ctx.generator.manual_seed(epoch_seed(seed, epoch, salt=1_000_010 + rank))


def cycle(loader: Iterator | Sequence) -> Iterator:
    """Endless iteration over a DataLoader (a new pass when one ends)."""
    while True:
        yield from loader


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_one_epoch(step_module: nn.Module, loader, balanced_loader, optimizer: torch.optim.Optimizer,
                    scheduler, device: torch.device, scaler=None, amp: str = "off", grad_clip: float = 0.0,
                    progress: bool = False, first_batch: dict | None = None) -> dict[str, float]:
    """One pass over ``loader`` with a ``TrainStep`` (or its DDP wrapper), drawing a partner batch from
    ``balanced_loader`` (or None) per step; returns mean loss and train accuracy (w.r.t. the step's hard/argmax
    targets), averaged over ranks under torchrun. ``first_batch`` (a dict) receives the first batch for pictures."""
    from tqdm import tqdm

    from common.runtime import autocast, reduce_mean

    step_module.train()
    balanced_iter = cycle(balanced_loader) if balanced_loader is not None else None
    total, correct, seen = 0.0, 0, 0
    for inst in tqdm(loader, desc="train", disable=not progress, leave=False):
        inst = to_device(inst, device)
        bal = to_device(next(balanced_iter), device) if balanced_iter is not None else None
        with autocast(device, amp):
            loss, logits, targets = step_module(inst, bal)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()}; lower optim.lr")
        if first_batch is not None and not first_batch:
            first_batch.update(inst=inst, bal=bal)
        backward_and_step(loss, optimizer, scaler, step_module.parameters(), grad_clip)
        scheduler.step()
        n = logits.shape[0]
        total += float(loss.detach()) * n
        correct += int((logits.argmax(1) == targets.argmax(1)).sum())
        seen += n
    return {"train_loss": reduce_mean(total / max(seen, 1)), "train_acc": reduce_mean(correct / max(seen, 1)),
            "lr": optimizer.param_groups[0]["lr"]}


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, amp: str = "off", progress: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (dataset indices ``(N,)``, labels ``(N,)``, logits ``(N, C)``) in dataset order; under torchrun the
    shards of a DistributedSampler are gathered from every rank (padding duplicates removed)."""
    from tqdm import tqdm

    from common.runtime import autocast, gather_by_index

    model.eval()
    logits, labels, index = [], [], []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        with autocast(device, amp):
            logits.append(model(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
        index.append(batch["index"])
    index_all, logits_all, labels_all = gather_by_index(torch.cat(index), torch.cat(logits), torch.cat(labels))
    return index_all, labels_all, logits_all


def group_metrics(y_true: np.ndarray, logits: np.ndarray, groups: dict[str, Sequence[str]],
                  class_names: Sequence[str] = CLASSES) -> dict[str, float]:
    """accuracy, balanced_accuracy, f1_macro, auc, ``loss`` (mean cross-entropy of the logits), per-class recall
    ``recall_<CLS>`` and group means ``<group>_recall`` (classes absent from ``y_true`` are left out of the means;
    a group none of whose classes is present is NaN)."""
    from common.metrics import classification_metrics

    m = classification_metrics(y_true, logits, num_classes=len(class_names), from_logits=True)
    log_p = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1)
    loss = float(-log_p[torch.arange(len(y_true)), torch.as_tensor(y_true, dtype=torch.long)].mean())
    cm = m["confusion_matrix"]
    support = cm.sum(axis=1)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    out: dict[str, float] = {k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "f1_macro", "auc")}
    out["loss"] = loss
    for name, r in zip(class_names, recall):
        out[f"recall_{name}"] = float(r)
    for group, members in groups.items():
        vals = [recall[class_names.index(c)] for c in members if support[class_names.index(c)] > 0]
        out[f"{group}_recall"] = float(np.mean(vals)) if vals else float("nan")
    return out


@dataclass
class Evaluation:
    """Metrics of one evaluated subset and the predictions they come from."""

    metrics: dict[str, float]
    indices: np.ndarray          # (N,) dataset indices
    targets: np.ndarray          # (N,) labels
    outputs: np.ndarray          # (N, C) logits


def evaluate(model: nn.Module, loader, device: torch.device, groups: dict[str, Sequence[str]], amp: str = "off",
             progress: bool = False) -> Evaluation:
    """Predict ``loader`` and compute :func:`group_metrics`."""
    indices, targets, outputs = predict(model, loader, device, amp, progress)
    return Evaluation(group_metrics(targets, outputs, groups), indices, targets, outputs)
