"""The segmenter's training loop, prediction and per-volume evaluation (no CLI, no file layout).

- :func:`train_segmenter`: SSL iterations ``start .. end - 1`` (batches from ``pipeline.sample_batch``);
- :func:`predict_probs` / :func:`predict`: tumour probabilities of slices, and ``(indices, targets, outputs)``;
- :func:`evaluate_volumes`: per-volume Dice, Jaccard, HD95 and ASD (mm) on the original grid + global Dice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from aslseg.data import SliceSet, paste_back
from aslseg.pipeline import LabelledPool, TestCase, make_affine, sample_batch
from aslseg.settings import Config
from common.metrics import binary_segmentation_metrics

__all__ = ["train_segmenter", "predict_probs", "predict", "evaluate_volumes"]


def train_segmenter(trainer, pool: LabelledPool, cfg: Config, start: int, end: int,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """SSL iterations ``start .. end - 1``; ``on_step(it + 1, losses)`` after each (logging, checkpoints)."""
    from tqdm import tqdm

    affine = make_affine() if cfg.data.augment else None
    for it in tqdm(range(start, end), desc=cfg.ssl.method, disable=not cfg.runtime.progress, leave=False):
        rng = np.random.default_rng([cfg.seed, 99, it])
        losses = trainer.step(it, sample_batch(pool, cfg, it, affine), rng)
        if on_step is not None:
            on_step(it + 1, losses)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 32) -> np.ndarray:
    """Tumour probability ``(N, H, W)`` of slices ``(N, H, W)`` in [0, 1]."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.asarray(images[i:i + batch], np.float32))[:, None].to(device)
        out.append(model(x).softmax(dim=1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, *images.shape[1:]), np.float32)


def predict(model: torch.nn.Module, slices: SliceSet, device: torch.device
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(indices, targets, outputs)``: slice indices, tumour labels (None without labels) and probabilities."""
    return np.arange(len(slices)), slices.tumour, predict_probs(model, slices.images, device)


def evaluate_volumes(test: list[TestCase], probs: list[np.ndarray], surface: bool = True
                     ) -> tuple[list[dict], dict[str, float]]:
    """Per-volume tumour Dice, Jaccard, HD95 and ASD (mm, with spacing) on the original grid + global Dice."""
    rows, inter, total = [], 0, 0
    for case, p in zip(test, probs):
        pred = paste_back(p, case.slices.meta[case.volume.case_id])
        gt = case.volume.label == 2
        m = binary_segmentation_metrics(pred, gt, case.volume.spacing, surface=surface)
        rows.append({"case_id": case.volume.case_id, "dice": m["dice"], "jaccard": m["iou"],
                     "hd95_mm": m.get("hd95", np.nan), "asd_mm": m.get("asd", np.nan),
                     "empty_pred": m["empty_pred"], "empty_gt": m["empty_gt"]})
        inter += int((pred & gt).sum())
        total += int(pred.sum() + gt.sum())
    keys = ["dice", "jaccard", "hd95_mm", "asd_mm"]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary["dice_std"] = float(np.std([r["dice"] for r in rows]))
    summary["dice_global"] = 2 * inter / total if total else 1.0
    return rows, summary
