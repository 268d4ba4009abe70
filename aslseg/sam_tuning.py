"""Fine-tuning SAM on the labelled slices ("fine-tunes SAM on labeled data") and the SAM training step it shares
with ``pretrain_sam.py``.

Each training example is (slice, box, target): a ground-truth tumour component with its tight box enlarged by the
inference margin ``prompts.box_margin`` and each edge moved in or out by up to ``sam.box_jitter`` of the side
(MedSAM's ``bbox_shift`` moves edges outwards only and adds no inference margin; OURS: training boxes then look
like the inference ones), or, with probability ``sam.pseudo_box_prob``,
a component of the SSL segmenter's prediction on that labelled slice with the ground-truth components it touches
as the target (empty for an SSL false positive), so SAM meets the prompt noise it will see and learns to answer a
wrong box with nothing. Loss: Dice + BCE (MedSAM) for ``decoder``/``full``, 0.2 CE + 0.8 Dice (SAMed) for
``lora``; AdamW, SAMed's linear warm-up and poly-0.9 decay for ``lora``, a constant rate otherwise.

Under torchrun every rank draws a step's whole batch of examples (a function of (seed, step)) and trains on its
equal contiguous share of them through :class:`PromptedSAM` wrapped in DDP with ``find_unused_parameters``: the
prompts never reach some trainable parameters (the point embeddings without a point, the IoU head when its loss
is off, the dense-mask path that the other mask-prompt setting uses), and which ones varies from step to step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aslseg.prompts import boxes_from_mask, components, margin_box
from aslseg.sam_model import SAMSegmenter, add_lora, default_lr, set_trainable
from aslseg.settings import SAMConfig
from common.runtime import dist_info, wrap_ddp

__all__ = ["SAMExample", "PromptedSAM", "soft_dice_loss", "sam_loss", "sam_train_step", "sample_finetune_examples",
           "rank_examples", "wrap_sam_ddp", "lr_factor", "finetune_sam"]


@dataclass
class SAMExample:
    """One prompt: slice index, XYXY box (slice pixels), binary target ``(H, W)``, optional XY point."""

    index: int
    box: np.ndarray
    target: np.ndarray
    point: np.ndarray | None = None


class PromptedSAM(torch.nn.Module):
    """One training forward of a :class:`SAMSegmenter` as a module (what DDP wraps): images ``(B, 1, H, W)`` (or
    cached embeddings, ``embedded=True``) -> the mask logits of every (image, prompt) pair, and the predicted IoU
    only when the loss uses it (an output no loss reaches would leave DDP waiting for its gradients)."""

    def __init__(self, model: SAMSegmenter):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, pair_index: torch.Tensor, boxes: torch.Tensor, slice_size: tuple[int, int],
                points: tuple[torch.Tensor, torch.Tensor] | None = None, embedded: bool = False,
                with_iou: bool = False):
        emb = x if embedded else self.model.embed(x)
        logits, iou = self.model.decode_pairs(emb[pair_index], boxes, slice_size, points)
        return (logits, iou) if with_iou else logits


def wrap_sam_ddp(model: SAMSegmenter) -> torch.nn.Module:
    """:class:`PromptedSAM` of ``model``, DDP-wrapped under torchrun (rank 0's weights, e.g. LoRA's random
    initialisation, are broadcast); call after the trainable parameters are set."""
    return wrap_ddp(PromptedSAM(model), model.mean.device, find_unused_parameters=True)


def rank_examples(examples: list, rank: int, world_size: int) -> list:
    """This rank's equal contiguous share of a step's examples (all of them in one process)."""
    if len(examples) % world_size:
        raise ValueError(f"{len(examples)} SAM training examples per step cannot be split evenly over {world_size} "
                         f"ranks; make sam.batch_size (sam_pretrain.batch_size) a multiple of the number of ranks")
    per = len(examples) // world_size
    return examples[rank * per:(rank + 1) * per]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-mask soft Dice of ``sigmoid(logits)`` vs ``target``, both ``(N, 1, H, W)``, averaged over masks."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def sam_loss(logits: torch.Tensor, target: torch.Tensor, dice_w: float, bce_w: float) -> torch.Tensor:
    return dice_w * soft_dice_loss(logits, target) + bce_w * F.binary_cross_entropy_with_logits(logits, target)


def sam_train_step(model: SAMSegmenter, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                   examples: list[SAMExample], dice_w: float = 1.0, bce_w: float = 1.0, iou_w: float = 0.0,
                   embeddings: torch.Tensor | None = None, step_model: torch.nn.Module | None = None
                   ) -> dict[str, float]:
    """One AdamW step on ``examples`` (their ``index`` points into ``images (N, 1, H, W)``, or into cached
    ``embeddings``). All pairs go through one batched decoder call (:meth:`SAMSegmenter.decode_pairs`).
    ``iou_w`` > 0 also regresses the IoU head on the true IoU of the thresholded mask. ``step_model``: the
    :func:`wrap_sam_ddp` of ``model`` (built here when None)."""
    model.train()
    step_model = step_model if step_model is not None else PromptedSAM(model)
    device = model.mean.device
    idx = sorted({e.index for e in examples})
    pos = {i: k for k, i in enumerate(idx)}
    x = images[idx].to(device) if embeddings is None else embeddings[idx].to(device)
    h, w = images.shape[-2:]
    boxes = torch.as_tensor(np.stack([e.box for e in examples]), dtype=torch.float32)
    pts = None
    if any(e.point is not None for e in examples):
        coords = np.stack([e.point if e.point is not None else np.zeros(2, np.float32) for e in examples])
        labels = torch.tensor([1 if e.point is not None else -1 for e in examples], dtype=torch.int)[:, None]
        pts = (torch.as_tensor(coords, dtype=torch.float32)[:, None], labels)
    out = step_model(x, torch.tensor([pos[e.index] for e in examples]), boxes, (h, w), pts,
                     embedded=embeddings is not None, with_iou=iou_w > 0)
    logits_t, iou_t = out if iou_w > 0 else (out, None)
    target_t = torch.as_tensor(np.stack([e.target for e in examples]), dtype=torch.float32)[:, None].to(device)
    loss = sam_loss(logits_t, target_t, dice_w, bce_w)
    logs = {"loss_mask": float(loss.detach())}
    if iou_w > 0:
        with torch.no_grad():
            hard = (logits_t > 0).float()
            inter, union = (hard * target_t).sum((1, 2, 3)), ((hard + target_t) > 0).float().sum((1, 2, 3))
            true_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        iou_loss = F.mse_loss(iou_t[:, 0], true_iou)
        loss = loss + iou_w * iou_loss
        logs["loss_iou"] = float(iou_loss.detach())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"SAM training: non-finite loss {float(loss.detach())}; lower sam.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    logs["loss"] = float(loss.detach())
    return logs


def sample_finetune_examples(labels: np.ndarray, ssl_masks: np.ndarray | None, cfg: SAMConfig, min_area: int,
                             margin: int, rng: np.random.Generator) -> list[SAMExample]:
    """``cfg.batch_size`` examples from labelled slices ``labels (N, H, W)`` (tumour 0/1) and the SSL predictions on
    them (``ssl_masks``, same shape, or None)."""
    shape = labels.shape[-2:]
    positive = np.flatnonzero(labels.reshape(len(labels), -1).any(1))
    with_pred = [] if ssl_masks is None else np.flatnonzero(ssl_masks.reshape(len(ssl_masks), -1).any(1))
    if len(positive) == 0 and len(with_pred) == 0:
        raise ValueError("SAM fine-tuning needs at least one labelled slice with a tumour")
    out: list[SAMExample] = []
    while len(out) < cfg.batch_size:
        use_pseudo = len(with_pred) > 0 and (len(positive) == 0 or rng.random() < cfg.pseudo_box_prob)
        if use_pseudo:
            i = int(rng.choice(with_pred))
            boxes = boxes_from_mask(ssl_masks[i], min_area, margin)
            if len(boxes) == 0:
                continue
            box = boxes[int(rng.integers(len(boxes)))]
            x0, y0, x1, y1 = box.astype(int)
            target = np.zeros(shape, np.float32)
            for comp in components(labels[i]):
                if comp[y0:y1, x0:x1].any():
                    target[comp] = 1.0
            out.append(SAMExample(i, box, target))
        else:
            i = int(rng.choice(positive))
            comps = components(labels[i])
            comp = comps[int(rng.integers(len(comps)))]
            box = margin_box(boxes_from_mask(comp)[0], shape, margin, cfg.box_jitter * float(np.mean(shape)), rng)
            out.append(SAMExample(i, box, comp.astype(np.float32)))
    return out


def lr_factor(step: int, total: int, warmup: int, mode: str) -> float:
    """SAMed schedule for ``lora``: linear warm-up over ``warmup`` steps, then (1 - t / total)^0.9; 1 otherwise."""
    if mode != "lora":
        return 1.0
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(1.0 - (step - warmup) / max(total - warmup, 1), 0.0) ** 0.9


def finetune_sam(model: SAMSegmenter, images: np.ndarray, labels: np.ndarray, ssl_masks: np.ndarray | None,
                 cfg: SAMConfig, min_area: int, margin: int, seed: int) -> list[float]:
    """Fine-tune ``model`` in place for ``cfg.steps`` on labelled slices ``images (N, H, W)`` in [0, 1] with tumour
    ``labels (N, H, W)``; returns the loss per step."""
    if cfg.finetune == "lora":
        add_lora(model.sam, cfg.lora_rank)
    params = set_trainable(model.sam, cfg.finetune)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr or default_lr(cfg.finetune), weight_decay=cfg.weight_decay)
    base_lr = optimizer.param_groups[0]["lr"]
    x = torch.from_numpy(np.asarray(images, np.float32))[:, None]
    embeddings = None
    if cfg.finetune == "decoder":  # both encoders frozen: embed every labelled slice once
        model.eval()
        with torch.no_grad():
            embeddings = torch.cat([model.embed(x[i:i + 16].to(model.mean.device)) for i in range(0, len(x), 16)])
    dice_w, bce_w = (0.8, 0.2) if cfg.finetune == "lora" else (1.0, 1.0)
    info = dist_info()
    step_model = wrap_sam_ddp(model)
    losses = []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(step, cfg.steps, cfg.warmup, cfg.finetune)
        rng = np.random.default_rng([seed, 77, step])
        examples = rank_examples(sample_finetune_examples(labels, ssl_masks, cfg, min_area, margin, rng), info.rank,
                                 info.world_size)
        losses.append(sam_train_step(model, optimizer, x, examples, dice_w, bce_w, embeddings=embeddings,
                                     step_model=step_model)["loss"])
    set_trainable(model.sam, "decoder")
    model.eval()
    return losses
