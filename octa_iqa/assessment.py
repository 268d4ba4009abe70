"""Three-class quality metrics and figures (our protocol; the paper's tables are not available).

Labels: 0 ungradable, 1 gradable, 2 outstanding. Metrics from scikit-learn: accuracy, balanced accuracy, Cohen's
kappa (quadratic and unweighted), macro and per-class F1, confusion matrix; AUROC of outstanding vs rest from the
quality score (higher = worse, so the positive class is "non-outstanding"), AUROC of ungradable vs gradable within
the truly non-outstanding images, and the adjusted Rand index of the stage-2 split on the images that are truly
non-outstanding and predicted non-outstanding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.tracking import save_figure
from octa_iqa.settings import CLASS_NAMES

__all__ = ["quality_metrics", "plot_score_histograms", "plot_embedding", "example_grid"]


def _auroc(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, score))


def quality_metrics(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray | None = None,
                    ug_score: np.ndarray | None = None) -> dict[str, float | np.ndarray]:
    """``y_true``/``y_pred`` (N,) in {0, 1, 2}; ``score`` (N,) outstanding-vs-rest score (higher = worse);
    ``ug_score`` (N,) ungradable-vs-gradable score (higher = more ungradable; default ``score``)."""
    from sklearn.metrics import (
        accuracy_score,
        adjusted_rand_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
    )

    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    bad = np.setdiff1d(np.concatenate([y_true, y_pred]), [0, 1, 2])
    if bad.size:
        raise ValueError(f"labels must be 0/1/2, found {bad.tolist()}")
    labels = [0, 1, 2]
    per_f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out: dict[str, float | np.ndarray] = {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "qwk": float(cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")),
        "f1_macro": float(np.mean(per_f1)),
        "auroc": float("nan"),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        **{f"f1_{name}": float(v) for name, v in zip(CLASS_NAMES, per_f1)},
        "auroc_ungradable_vs_gradable": float("nan"),
        "stage1_accuracy": float(accuracy_score(y_true == 2, y_pred == 2)),
        "ari": float("nan"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels),
    }
    if score is not None:
        score = np.asarray(score, np.float64)
        out["auroc"] = _auroc(y_true != 2, score)
        ug = score if ug_score is None else np.asarray(ug_score, np.float64)
        rest = y_true != 2
        out["auroc_ungradable_vs_gradable"] = _auroc(y_true[rest] == 0, ug[rest])
    both = (y_true != 2) & (y_pred != 2)
    if both.sum() >= 2:
        out["ari"] = float(adjusted_rand_score(y_true[both], y_pred[both]))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_histograms(scores: np.ndarray, labels: np.ndarray, thresholds: Sequence[float], path: str | Path,
                          title: str = "quality score s(x)") -> Path:
    """Histogram of the score per true class with vertical lines at the thresholds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(np.min(scores), np.max(scores), 40)
    for label, color in zip((2, 1, 0), ("tab:green", "tab:orange", "tab:red")):
        sel = labels == label
        if sel.any():
            ax.hist(scores[sel], bins=bins, alpha=0.5, color=color, label=f"{CLASS_NAMES[label]} (n={sel.sum()})")
    for i, t in enumerate(thresholds):
        ax.axvline(t, color="k", ls="--" if i == 0 else ":", label="tau" if i == 0 else "2nd cut")
    ax.set_xlabel(title)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def plot_embedding(embedding: np.ndarray, clusters: np.ndarray, truth: np.ndarray, path: str | Path) -> Path:
    """2-D embedding of the non-outstanding images: left coloured by predicted cluster, right by true class."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    colors = {0: "tab:red", 1: "tab:orange", 2: "tab:green"}
    for ax, values, title in ((axes[0], clusters, "by cluster (named)"), (axes[1], truth, "by true class")):
        for value in np.unique(values):
            sel = values == value
            ax.scatter(embedding[sel, 0], embedding[sel, 1], s=10, c=colors.get(int(value), "k"),
                       label=CLASS_NAMES[int(value)])
        ax.set_title(title)
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def example_grid(images: Sequence[np.ndarray], y_pred: np.ndarray, y_true: np.ndarray, path: str | Path,
                 per_class: int = 6) -> Path:
    """Rows = predicted class (ungradable, gradable, outstanding), up to ``per_class`` examples each; a red frame
    marks a wrong prediction."""
    from common.tracking import image_grid, save_png, to_uint8_rgb

    rows = []
    for label in (0, 1, 2):
        idx = np.nonzero(y_pred == label)[0][:per_class]
        row = []
        for i in idx:
            tile = to_uint8_rgb(images[i]).copy()
            if y_true[i] != label and y_true[i] >= 0:
                tile[:2], tile[-2:], tile[:, :2], tile[:, -2:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            row.append(tile)
        rows.append(row or [np.zeros_like(to_uint8_rgb(images[0]))])
    return save_png(image_grid(rows), path)
