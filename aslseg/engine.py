"""The segmenter's training loop, prediction and per-volume evaluation (no CLI, no file layout).

- :func:`train_segmenter`: SSL iterations ``start .. end - 1`` (batches from ``pipeline.sample_batch``; under
  torchrun each rank realises its share of every batch, see ``pipeline.batch_share``);
- :func:`predict_probs` / :func:`predict`: tumour probabilities of slices, and ``(indices, targets, outputs)``;
- :func:`evaluate_volumes`: per-volume Dice, Jaccard, HD95 and ASD (mm) on the original grid + global Dice;
  :func:`evaluate_test` does the same with the volumes strided over the ranks and gathered (each volume once).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from aslseg.data import SliceSet, paste_back
from aslseg.pipeline import LabelledPool, TestCase, make_affine, sample_batch
from aslseg.settings import Config
from aslseg.sharding import rank_items
from common.metrics import binary_segmentation_metrics
from common.runtime import dist_info, gather_by_index

__all__ = ["iteration_rng", "train_segmenter", "predict_probs", "predict", "volume_rows", "summarize_volumes",
           "evaluate_volumes", "evaluate_test"]


def iteration_rng(seed: int, it: int) -> np.random.Generator:
    """The generator of iteration ``it``'s batch-level draws (BCP's one rectangle per batch): a function of (seed,
    it) alone, so every rank draws the same rectangle."""
    return np.random.default_rng([seed, 99, it])


def train_segmenter(trainer, pool: LabelledPool, cfg: Config, start: int, end: int,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """SSL iterations ``start .. end - 1``; ``on_step(it + 1, losses)`` after each (logging, checkpoints)."""
    from tqdm import tqdm

    affine = make_affine() if cfg.data.augment else None
    info = dist_info()
    for it in tqdm(range(start, end), desc=cfg.ssl.method, disable=not cfg.runtime.progress or not info.is_main,
                   leave=False):
        batch = sample_batch(pool, cfg, it, affine, info.rank, info.world_size)
        losses = trainer.step(it, batch, iteration_rng(cfg.seed, it))
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


def volume_rows(test: list[TestCase], probs: list[np.ndarray], surface: bool = True
                ) -> tuple[list[dict], np.ndarray]:
    """Per-volume rows (tumour Dice, Jaccard, HD95 and ASD in mm, with spacing, on the original grid) and the
    voxel counts ``(N, 2)`` (prediction & truth, prediction + truth) the global Dice sums."""
    rows, counts = [], []
    for case, p in zip(test, probs):
        pred = paste_back(p, case.slices.meta[case.volume.case_id])
        gt = case.volume.label == 2
        m = binary_segmentation_metrics(pred, gt, case.volume.spacing, surface=surface)
        rows.append({"case_id": case.volume.case_id, "dice": m["dice"], "jaccard": m["iou"],
                     "hd95_mm": m.get("hd95", np.nan), "asd_mm": m.get("asd", np.nan),
                     "empty_pred": m["empty_pred"], "empty_gt": m["empty_gt"]})
        counts.append((int((pred & gt).sum()), int(pred.sum() + gt.sum())))
    return rows, np.asarray(counts, np.int64).reshape(-1, 2)


def evaluate_volumes(test: list[TestCase], probs: list[np.ndarray], surface: bool = True
                     ) -> tuple[list[dict], dict[str, float]]:
    """Per-volume tumour Dice, Jaccard, HD95 and ASD (mm, with spacing) on the original grid + global Dice."""
    rows, counts = volume_rows(test, probs, surface)
    return rows, summarize_volumes(rows, counts)


def evaluate_test(test: list[TestCase], predict_case: Callable[[TestCase], np.ndarray], surface: bool = True
                  ) -> tuple[list[dict], dict[str, float]]:
    """:func:`evaluate_volumes` of ``predict_case(case)`` (tumour probabilities of its slices) over ``test``, the
    volumes strided over the torchrun ranks and the rows gathered in test order (each volume once): the rows and
    summary of a one-process evaluation, on every rank."""
    mine = rank_items(len(test))
    rows, counts = volume_rows([test[i] for i in mine], [predict_case(test[i]) for i in mine], surface)
    if dist_info().distributed:
        _, row_array, counts = gather_by_index(mine, np.array(rows + [None], dtype=object)[:-1], counts)
        rows = list(row_array)
    return rows, summarize_volumes(rows, counts)


def summarize_volumes(rows: list[dict], counts: np.ndarray) -> dict[str, float]:
    """Means of the per-volume metrics, the Dice spread and the global Dice (over all test voxels)."""
    inter, total = int(counts[:, 0].sum()), int(counts[:, 1].sum())
    keys = ["dice", "jaccard", "hd95_mm", "asd_mm"]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary["dice_std"] = float(np.std([r["dice"] for r in rows]))
    summary["dice_global"] = 2 * inter / total if total else 1.0
    return summary
