"""Metric wrappers with documented conventions: scikit-learn for classification, MONAI for segmentation,
scikit-image for image quality. Nothing here re-derives a metric; it fixes the input format and the edge cases.

Segmentation empty-mask policy (per case, per class; never a silent NaN):

==================  =====  =====  ===================================  ======================================
case                Dice   IoU    HD95                                 ASD
==================  =====  =====  ===================================  ======================================
both empty          1.0    1.0    0.0                                  0.0
one of them empty   0.0    0.0    image diagonal in physical units     image diagonal in physical units
both non-empty      MONAI  MONAI  MONAI (percentile 95, symmetric)     MONAI (symmetric)
==================  =====  =====  ===================================  ======================================

The diagonal is the largest distance possible inside the image, so a missed or hallucinated structure costs the
worst score instead of disappearing from the mean (MONAI #9095, nnU-Net #380). Each result also says which cases
hit the policy (``empty_gt`` / ``empty_pred`` columns) so a reader can exclude them deliberately.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "softmax_np",
    "classification_metrics",
    "auc_per_class",
    "auc_macro_ovr",
    "quadratic_kappa",
    "binary_segmentation_metrics",
    "mask_dice",
    "segmentation_metrics",
    "psnr",
    "ssim",
]


# --------------------------------------------------------------------------------------------- classification
def softmax_np(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _as_probs(scores: np.ndarray, from_logits: bool) -> np.ndarray:
    """``(N, C)`` probabilities from ``(N, C)`` scores/logits or ``(N,)`` positive-class scores/logits."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-scores)) if from_logits else scores
        return np.stack([1.0 - positive, positive], axis=1)
    return softmax_np(scores) if from_logits else scores


def auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC per class from ``(N, C)`` scores; NaN for a class absent (or alone) in ``y_true``."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positives = y_true == c
        if 0 < positives.sum() < len(y_true):
            out[c] = roc_auc_score(positives, probs[:, c])
    return out


def auc_macro_ovr(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in ``y_true`` (binary: AUC of the positive class)."""
    per_class = auc_per_class(y_true, probs)
    if probs.shape[1] == 2:
        return float(per_class[1])
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (the grading convention of DR and quality-assessment benchmarks)."""
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def classification_metrics(y_true: Sequence[int] | np.ndarray, scores: np.ndarray, num_classes: int | None = None,
                           from_logits: bool = False) -> dict[str, float | np.ndarray]:
    """All classification metrics from integer labels and ``(N, C)`` scores (probabilities, or logits).

    Returns scalars ``auc`` (macro OvR), ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``kappa_quadratic``,
    per-class ``auc_per_class`` (array, NaN where undefined) and ``confusion_matrix`` (rows = truth).
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = _as_probs(scores, from_logits)
    num_classes = num_classes or probs.shape[1]
    if probs.shape != (len(y_true), num_classes):
        raise ValueError(f"scores have shape {probs.shape}, expected ({len(y_true)}, {num_classes})")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], found {y_true.min()}..{y_true.max()}")
    y_pred = probs.argmax(axis=1)
    labels = list(range(num_classes))
    return {
        "auc": auc_macro_ovr(y_true, probs),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "kappa_quadratic": quadratic_kappa(y_true, y_pred) if num_classes > 1 else float("nan"),
        "auc_per_class": auc_per_class(y_true, probs),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels),
    }


# --------------------------------------------------------------------------------------------- segmentation
def _diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    spacing = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt((((np.asarray(shape) - 1) * spacing) ** 2).sum()))


def mask_dice(pred: np.ndarray, truth: np.ndarray, empty: float = float("nan")) -> float:
    """Dice of two boolean masks of one shape, pooled over every element (a stack of slices counts as one mask);
    ``empty``: the value when both are empty (nan: undefined, 1: both agree there is nothing). Plain NumPy, for
    pseudo-label bookkeeping in loops; scored metrics go through :func:`binary_segmentation_metrics`."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    total = int(pred.sum()) + int(truth.sum())
    return float(2 * (pred & truth).sum() / total) if total else float(empty)


def binary_segmentation_metrics(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor,
                                spacing: Sequence[float] | None = None, surface: bool = True
                                ) -> dict[str, float]:
    """Dice, IoU, HD95 and symmetric ASD of one binary 2D/3D mask pair, with the module's empty-mask policy.

    ``pred``/``gt``: boolean or {0, 1} arrays of identical shape ``(H, W)`` or ``(D, H, W)``; ``spacing`` in the
    physical units of each axis (distances are then in those units). ``surface=False`` skips HD95/ASD.
    """
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou

    p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).bool()
    g = torch.as_tensor(np.asarray(gt) if not isinstance(gt, torch.Tensor) else gt).bool()
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from ground truth shape {tuple(g.shape)}")
    empty_p, empty_g = not bool(p.any()), not bool(g.any())
    out = {"empty_pred": float(empty_p), "empty_gt": float(empty_g)}
    if empty_p and empty_g:
        out.update(dice=1.0, iou=1.0)
        if surface:
            out.update(hd95=0.0, asd=0.0)
        return out
    if empty_p or empty_g:
        out.update(dice=0.0, iou=0.0)
        if surface:
            worst = _diagonal(p.shape, spacing)
            out.update(hd95=worst, asd=worst)
        return out
    yp, yg = p[None, None].float(), g[None, None].float()
    out["dice"] = float(compute_dice(yp, yg, include_background=True, ignore_empty=False)[0, 0])
    out["iou"] = float(compute_iou(yp, yg, include_background=True, ignore_empty=False)[0, 0])
    if surface:
        sp = None if spacing is None else [float(s) for s in spacing]
        out["hd95"] = float(compute_hausdorff_distance(yp, yg, include_background=True, percentile=95,
                                                       spacing=sp)[0, 0])
        out["asd"] = float(compute_average_surface_distance(yp, yg, include_background=True, symmetric=True,
                                                            spacing=sp)[0, 0])
    return out


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, classes: dict[str, int | Sequence[int]],
                         spacing: Sequence[float] | None = None, surface: bool = True) -> dict[str, float]:
    """Per-class metrics of an integer label map, e.g. ``classes={"disc": [1, 2], "cup": 2}`` (a list = union).

    Returns flat keys ``<metric>_<class>`` (``dice_disc``, ``hd95_cup``, ...), following the empty-mask policy.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    out: dict[str, float] = {}
    for name, labels in classes.items():
        labels = [labels] if isinstance(labels, int) else list(labels)
        case = binary_segmentation_metrics(np.isin(pred, labels), np.isin(gt, labels), spacing, surface)
        out.update({f"{metric}_{name}": value for metric, value in case.items()})
    return out


# --------------------------------------------------------------------------------------------- image quality
def psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image); ``inf`` for identical images."""
    from skimage.metrics import peak_signal_noise_ratio

    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if np.array_equal(pred, target):
        return float("inf")
    return float(peak_signal_noise_ratio(target, pred, data_range=data_range))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float, channel_axis: int | None = None,
         gaussian_weights: bool = False) -> float:
    """Structural similarity (scikit-image; 7x7 uniform window unless ``gaussian_weights``)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(target, np.float64), np.asarray(pred, np.float64),
                                       data_range=data_range, channel_axis=channel_axis,
                                       gaussian_weights=gaussian_weights))
