"""Stage 1 of ASLseg: the semi-supervised segmenter ("the segmentation model trained with a specific SSL paradigm").

The segmenter is MONAI's 2D ``UNet`` (channels 16-256, four stride-2 levels, two residual units; 1,625,161
parameters for 1 input channel, 2 classes). Four training paradigms, one :class:`SSLTrainer` step each:

- ``bcp``: Bidirectional Copy-Paste (Bai et al., CVPR 2023), as the official ``code/ACDC_BCP_train.py``:
  labelled and unlabelled batches are split into halves a/b; :func:`generate_mask` draws one zero rectangle of
  floor(2/3 H) x floor(2/3 W); stage 1 (``pretrain_iters``) pastes labelled-a outside / labelled-b inside the
  rectangle; stage 2 feeds ``unlabelled-a outside + labelled-a inside`` and ``labelled-b outside + unlabelled-b
  inside``, supervised by the EMA teacher's pseudo-labels (weight ``u_weight`` = 0.5) and the ground truth (1.0)
  through :func:`mix_loss` = (masked Dice + masked CE) / 2. The official ``get_ACDC_masks`` keeps the largest
  connected component; livers carry several lesions, so :func:`filter_components` drops components smaller than
  ``min_area`` instead (our change).
- ``mean_teacher`` / ``ua_mt``: as yulequan/UA-MT ``train_LA_meanteacher_certainty_unlabel.py``: supervised
  0.5 (CE + Dice) on the labelled part, softmax-MSE consistency between the student and the EMA teacher (noisy
  input, decay min(1 - 1/(t + 1), 0.99)) weighted 0.1 sigmoid_rampup(t // 150, 40); UA-MT keeps only pixels whose
  predictive entropy over ``uncertainty_passes`` noisy teacher passes is below (0.75 + 0.25 rampup) ln 2.
- ``supervised``: 0.5 (CE + Dice) on labelled slices only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from aslseg.model import SEGMENTER_PARAMS, build_model
from aslseg.settings import ModelConfig, OptimConfig, SSLConfig
from common.runtime import wrap_ddp

__all__ = ["SEGMENTER_PARAMS", "build_segmenter", "generate_mask", "masked_dice_loss", "mix_loss", "dice_ce_loss",
           "ema_update", "filter_components", "pseudo_labels", "sigmoid_rampup", "uncertainty_mask", "SSLBatch",
           "SSLTrainer"]

build_segmenter = build_model  # the segmenter of every paradigm (``model.build_model``)


# --------------------------------------------------------------------------------------------- BCP pieces
def generate_mask(height: int, width: int, rng: np.random.Generator, ratio: float = 2.0 / 3.0) -> torch.Tensor:
    """BCP ``generate_mask``: long ``(H, W)`` of ones with one zero rectangle of ``int(H ratio) x int(W ratio)`` at
    a uniform position (``np.random.randint(0, H - patch_h)`` as in the official script)."""
    ph, pw = int(height * ratio), int(width * ratio)
    top = int(rng.integers(0, max(height - ph, 1)))
    left = int(rng.integers(0, max(width - pw, 1)))
    mask = torch.ones(height, width, dtype=torch.long)
    mask[top:top + ph, left:left + pw] = 0
    return mask


def masked_dice_loss(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smooth: float = 1e-10
                     ) -> torch.Tensor:
    """BCP's ``DiceLoss(n_classes)(probs, target, mask)``: per class 1 - (2 sum(p t m) + s) / (sum(p^2 m) +
    sum(t^2 m) + s) over the whole batch, averaged over classes. ``probs (B, C, H, W)``, ``target (B, H, W)`` long,
    ``mask (B, H, W)`` (or broadcastable) weights."""
    n_classes = probs.shape[1]
    onehot = F.one_hot(target.long(), n_classes).permute(0, 3, 1, 2).float()
    m = mask.float().expand_as(target).unsqueeze(1)
    intersect = (probs * onehot * m).sum(dim=(0, 2, 3))
    y_sum = (onehot * onehot * m).sum(dim=(0, 2, 3))
    z_sum = (probs * probs * m).sum(dim=(0, 2, 3))
    return (1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)).mean()


def mix_loss(logits: torch.Tensor, image_label: torch.Tensor, patch_label: torch.Tensor, mask: torch.Tensor,
             u_weight: float = 0.5, unlabelled_image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """BCP ``mix_loss``: ``image_label`` supervises where ``mask`` = 1 (outside the rectangle), ``patch_label``
    inside. Weights: image 1.0 and patch ``u_weight``, swapped when ``unlabelled_image`` (the outer image is the
    unlabelled one). Returns ``(dice, ce)``; the official script's loss is their mean."""
    image_w, patch_w = (u_weight, 1.0) if unlabelled_image else (1.0, u_weight)
    probs = logits.softmax(dim=1)
    mask = mask.float().expand(logits.shape[0], *logits.shape[2:])
    patch_mask = 1 - mask
    dice = image_w * masked_dice_loss(probs, image_label, mask) + patch_w * masked_dice_loss(probs, patch_label,
                                                                                               patch_mask)
    ce_img = F.cross_entropy(logits, image_label.long(), reduction="none")
    ce_patch = F.cross_entropy(logits, patch_label.long(), reduction="none")
    ce = image_w * (ce_img * mask).sum() / (mask.sum() + 1e-16) + patch_w * (ce_patch * patch_mask).sum() / (
        patch_mask.sum() + 1e-16)
    return dice, ce


def dice_loss_fg(probs_fg: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """UA-MT ``losses.dice_loss``: 1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) on the foreground channel."""
    t = target.float()
    return 1 - (2 * (probs_fg * t).sum() + smooth) / ((probs_fg ** 2).sum() + (t ** 2).sum() + smooth)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 (CE + foreground Dice), the supervised loss of the UA-MT scripts. ``logits (B, 2, H, W)``,
    ``target (B, H, W)``."""
    ce = F.cross_entropy(logits, target.long())
    return 0.5 * (ce + dice_loss_fg(logits.softmax(dim=1)[:, 1], target))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """``teacher = decay teacher + (1 - decay) student`` for parameters; buffers (BN statistics) are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def filter_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components of a binary ``(H, W)`` mask smaller than ``min_area`` pixels."""
    mask = np.asarray(mask, bool)
    if min_area <= 1 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, min_area: int) -> torch.Tensor:
    """Argmax of teacher logits ``(B, 2, H, W)`` with components < ``min_area`` dropped -> long ``(B, H, W)``."""
    hard = logits.argmax(dim=1).cpu().numpy().astype(bool)
    out = np.stack([filter_components(m, min_area) for m in hard])
    return torch.from_numpy(out.astype(np.int64)).to(logits.device)


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2), t = clip(current / length, 0, 1) (Laine & Aila; UA-MT ``ramps.sigmoid_rampup``)."""
    if length == 0:
        return 1.0
    t = float(np.clip(current, 0.0, length)) / length
    return float(np.exp(-5.0 * (1.0 - t) ** 2))


def uncertainty_mask(probs_passes: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UA-MT: ``probs_passes (T, B, C, H, W)`` -> predictive entropy (nats) of their mean ``(B, 1, H, W)`` and the
    float mask ``entropy < threshold``."""
    mean = probs_passes.mean(dim=0)
    entropy = -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)
    return entropy, (entropy < threshold).float()


# --------------------------------------------------------------------------------------------- the trainer
@dataclass
class SSLBatch:
    """One step's input: labelled images ``(L, 1, H, W)`` with labels ``(L, H, W)`` and unlabelled images
    ``(U, 1, H, W)`` (never labels: the data layer does not hand them out)."""

    labelled: torch.Tensor
    labels: torch.Tensor
    unlabelled: torch.Tensor


class SSLTrainer:
    """Student + EMA teacher + SGD of one ``ssl.method``; :meth:`step` is one iteration (``it`` counts from 0
    over the whole schedule, BCP's stage 2 starting at ``pretrain_iters``). Under torchrun the student trains
    through DDP (``train_model``; rank 0's initialisation is broadcast before the teacher copies it) on this rank's
    share of the batch; ``student`` is the plain module (prediction, EMA, checkpoints)."""

    def __init__(self, cfg: SSLConfig, optim: OptimConfig, device: torch.device,
                 student: torch.nn.Module | None = None, horizon: int = 0):
        self.cfg, self.optim_cfg, self.device = cfg, optim, device
        self.horizon = horizon or cfg.pretrain_iters + cfg.self_iters  # the poly schedule's length
        self.student = (student if student is not None else build_segmenter(ModelConfig())).to(device)
        self.train_model = wrap_ddp(self.student, device)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.optimizer = self._make_optimizer()
        if cfg.method == "bcp":
            self.phase = "pretrain" if cfg.pretrain_iters > 0 else "self"
        else:
            self.phase = "main"

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.optim_cfg
        return torch.optim.SGD(self.student.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    @property
    def total_iters(self) -> int:
        return self.cfg.pretrain_iters + self.cfg.self_iters

    def _set_lr(self, it: int) -> None:
        o = self.optim_cfg
        lr = o.lr * (0.1 ** (it // o.lr_step)) if o.lr_step else o.lr
        if o.lr_schedule == "poly":
            lr *= max(1.0 - it / max(self.horizon, 1), 0.0) ** o.lr_power
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def start_self_training(self) -> None:
        """BCP stage 2: teacher <- student (both from the stage-1 weights), fresh SGD (as the official script)."""
        self.teacher.load_state_dict(self.student.state_dict())
        self.optimizer = self._make_optimizer()
        self.phase = "self"

    def step(self, it: int, batch: SSLBatch, rng: np.random.Generator) -> dict[str, float]:
        """One iteration; returns the logged losses. Raises FloatingPointError on a non-finite loss."""
        if self.cfg.method == "bcp" and self.phase == "pretrain" and it >= self.cfg.pretrain_iters:
            self.start_self_training()
        self._set_lr(it)
        self.student.train()
        x_l, y_l = batch.labelled.to(self.device), batch.labels.to(self.device)
        x_u = batch.unlabelled.to(self.device)
        if self.cfg.method == "bcp":
            loss, logs = (self._bcp_pretrain(x_l, y_l, rng) if self.phase == "pretrain"
                          else self._bcp_self(x_l, y_l, x_u, rng))
        elif self.cfg.method == "supervised":
            loss = dice_ce_loss(self.train_model(x_l), y_l)
            logs = {}
        else:
            loss, logs = self._mean_teacher(x_l, y_l, x_u, it)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ssl.method={self.cfg.method}: non-finite loss {float(loss.detach())} at "
                                     f"iteration {it}; lower optim.lr or check the inputs for NaN")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._update_teacher(it)
        return {"loss": float(loss.detach()), **logs}

    def _update_teacher(self, it: int) -> None:
        if self.cfg.method == "bcp":
            if self.phase == "self":
                ema_update(self.teacher, self.student, self.cfg.ema_decay)
        elif self.cfg.method in ("mean_teacher", "ua_mt"):
            ema_update(self.teacher, self.student, min(1 - 1 / (it + 1), self.cfg.ema_decay))

    def _bcp_pretrain(self, x_l: torch.Tensor, y_l: torch.Tensor, rng: np.random.Generator):
        half = x_l.shape[0] // 2
        img_a, img_b, lab_a, lab_b = x_l[:half], x_l[half:], y_l[:half], y_l[half:]
        mask = generate_mask(*x_l.shape[-2:], rng, self.cfg.mask_ratio).to(self.device)
        net_input = img_a * mask + img_b * (1 - mask)
        dice, ce = mix_loss(self.train_model(net_input), lab_a, lab_b, mask, u_weight=1.0, unlabelled_image=True)
        return (dice + ce) / 2, {"dice": float(dice.detach()), "ce": float(ce.detach())}

    def _bcp_self(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, rng: np.random.Generator):
        half_l, half_u = x_l.shape[0] // 2, x_u.shape[0] // 2
        img_a, img_b, lab_a, lab_b = x_l[:half_l], x_l[half_l:], y_l[:half_l], y_l[half_l:]
        uimg_a, uimg_b = x_u[:half_u], x_u[half_u:]
        with torch.no_grad():
            self.teacher.eval()
            plab_a = pseudo_labels(self.teacher(uimg_a), self.cfg.min_area)
            plab_b = pseudo_labels(self.teacher(uimg_b), self.cfg.min_area)
        mask = generate_mask(*x_l.shape[-2:], rng, self.cfg.mask_ratio).to(self.device)
        input_unl = uimg_a * mask + img_a * (1 - mask)
        input_l = img_b * mask + uimg_b * (1 - mask)
        out = self.train_model(torch.cat([input_unl, input_l]))
        out_unl, out_l = out[: input_unl.shape[0]], out[input_unl.shape[0]:]
        unl_dice, unl_ce = mix_loss(out_unl, plab_a, lab_a, mask, self.cfg.u_weight, unlabelled_image=True)
        l_dice, l_ce = mix_loss(out_l, lab_b, plab_b, mask, self.cfg.u_weight)
        dice, ce = unl_dice + l_dice, unl_ce + l_ce
        return (dice + ce) / 2, {"dice": float(dice.detach()), "ce": float(ce.detach())}

    def _mean_teacher(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, it: int):
        cfg = self.cfg
        n_l = x_l.shape[0]
        outputs = self.train_model(torch.cat([x_l, x_u]))
        supervised = dice_ce_loss(outputs[:n_l], y_l)
        self.teacher.eval()
        with torch.no_grad():
            noise = torch.clamp(torch.randn_like(x_u) * cfg.teacher_noise, -2 * cfg.teacher_noise,
                                2 * cfg.teacher_noise)
            teacher_probs = self.teacher(x_u + noise).softmax(dim=1)
        dist = (outputs[n_l:].softmax(dim=1) - teacher_probs) ** 2
        weight = cfg.consistency * sigmoid_rampup(it // 150, cfg.consistency_rampup)
        logs: dict[str, float] = {}
        if cfg.method == "ua_mt":
            with torch.no_grad():
                passes = []
                for _ in range(cfg.uncertainty_passes):
                    n = torch.clamp(torch.randn_like(x_u) * cfg.teacher_noise, -2 * cfg.teacher_noise,
                                    2 * cfg.teacher_noise)
                    passes.append(self.teacher(x_u + n).softmax(dim=1))
                threshold = (0.75 + 0.25 * sigmoid_rampup(it, max(self.total_iters, 1))) * np.log(2)
                _, mask = uncertainty_mask(torch.stack(passes), threshold)
            consistency = (mask * dist).sum() / (2 * mask.sum() + 1e-16)
            logs["certain_frac"] = float(mask.mean())
        else:
            consistency = dist.mean()
        logs.update(supervised=float(supervised.detach()), consistency=float(consistency.detach()))
        return supervised + weight * consistency, logs

    # ---- resume
    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(), "phase": self.phase}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.phase = state["phase"]
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
