"""Experiment tracking: scalars to TensorBoard and ``metrics.csv`` in one call, image grids, figures, eval tables.

Only rank 0 writes; on other ranks a :class:`Tracker` is silent. Tags are namespaced (``train/loss``,
``val/auc``); the CSV gets one row per ``log`` call with the union of all columns seen so far.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.runtime import dist_info

__all__ = ["Tracker", "to_uint8_rgb", "overlay_mask", "image_grid", "save_png", "pyplot", "plot_curves", "plot_roc",
           "plot_confusion_matrix", "save_figure", "write_comparison", "write_eval_tables", "markdown_table"]


class Tracker:
    """``tracker.log({"train/loss": 0.3, "val/auc": 0.9}, step=epoch)`` -> TensorBoard + ``metrics.csv``."""

    def __init__(self, run_dir: str | Path, enabled: bool | None = None, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = dist_info().is_main if enabled is None else enabled
        self.csv_path = self.run_dir / "metrics.csv"
        self._writer = None
        self._columns: list[str] = []
        self._rows: list[dict[str, Any]] = []
        if self.enabled and self.csv_path.is_file():  # resumed run: keep earlier rows
            with self.csv_path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self._columns = list(reader.fieldnames or [])
                self._rows = list(reader)
        if self.enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """Log scalars at ``step`` (epoch or round). Non-finite values are logged as they are (never dropped)."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), int(step))
        new_cols = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new_cols:
            self._columns += new_cols
            self._rewrite_csv()
        else:
            with self.csv_path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self._columns).writerow(row)

    def _rewrite_csv(self) -> None:
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)

    def log_image(self, tag: str, image: np.ndarray, step: int, png_path: str | Path | None = None) -> None:
        """Log an ``(H, W, 3)`` uint8 image to TensorBoard and optionally as PNG."""
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.add_image(tag, image, int(step), dataformats="HWC")
        if png_path is not None:
            save_png(image, png_path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- images
def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3)`` or ``(C, H, W)`` float/int image -> ``(H, W, 3)`` uint8, min-max scaled."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        lo, hi = np.nanmin(img), np.nanmax(img)
        img = np.zeros_like(img) if hi <= lo else (img - lo) / (hi - lo)
        img = (img * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img


_COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 128, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]])


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colour each non-zero label of an integer ``(H, W)`` mask over the image; returns ``(H, W, 3)`` uint8."""
    rgb = to_uint8_rgb(image).astype(np.float64)
    mask = np.asarray(mask)
    for label in np.unique(mask):
        if label == 0:
            continue
        color = _COLORS[(int(label) - 1) % len(_COLORS)]
        sel = mask == label
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * color
    return rgb.round().astype(np.uint8)


def image_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile images (each converted with :func:`to_uint8_rgb`) into one ``(H, W, 3)`` uint8 grid, row by row.

    Typical use: ``image_grid([[img, overlay_mask(img, gt), overlay_mask(img, pred)] for ...])``.
    """
    tiles = [[to_uint8_rgb(t) for t in row] for row in rows]
    h = max(t.shape[0] for row in tiles for t in row)
    w = max(t.shape[1] for row in tiles for t in row)
    n_cols = max(len(row) for row in tiles)
    grid = np.full((len(tiles) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return grid


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_rgb(image)).save(path)
    return path


# --------------------------------------------------------------------------------------------- figures
def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are written to files, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Tight layout, write a matplotlib figure to ``path`` (folders created) and close it."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_curves(metrics_csv: str | Path, keys: Sequence[str], path: str | Path, x: str = "step") -> Path:
    """Line plot of the given columns of a ``metrics.csv`` against ``x``; missing values are left as gaps."""
    import pandas as pd

    plt = pyplot()
    frame = pd.read_csv(metrics_csv)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise KeyError(f"{metrics_csv} has no column(s) {missing}; available: {list(frame.columns)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        sub = frame[[x, key]].dropna()
        ax.plot(sub[x], sub[key], marker="o", ms=3, label=key)
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=120)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path, normalize: bool = True
                          ) -> Path:
    """Confusion matrix (rows = truth, columns = prediction), row-normalised by default, counts annotated."""
    plt = pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(class_names), 0.8 + 0.6 * len(class_names)))
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if shown[i, j] > 0.5 * np.nanmax(shown) else "black", fontsize=8)
    return save_figure(fig, path, dpi=120)


# --------------------------------------------------------------------------------------------- comparison + report
def write_comparison(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, title: str,
                     figures: Sequence[str] = (), notes: str = "") -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md`` (one row per method, column ``method`` first).

    By convention the first row is the paper's method and its first metric column is the headline number that
    ``make report`` copies into the root README.
    """
    import pandas as pd

    if not rows or any("method" not in r for r in rows):
        raise ValueError("comparison rows need a `method` column")
    frame = pd.DataFrame(list(rows))
    frame = frame[["method", *[c for c in frame.columns if c != "method"]]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "comparison.csv"
    frame.to_csv(csv_path, index=False)
    lines = [f"# {title}", "", markdown_table(frame), ""]
    if notes:
        lines += [notes, ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    md_path = out_dir / "comparison.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(frame: Any) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def plot_roc(y_true: Sequence[int] | np.ndarray, scores: np.ndarray, path: str | Path,
             class_names: Sequence[str] | None = None) -> Path:
    """One-vs-rest ROC curves (scikit-learn ``roc_curve``) of ``scores`` ``(N,)`` (binary) or ``(N, C)``, with AUCs.

    Classes absent from ``y_true`` (or present alone) have no ROC curve and are left out of the legend.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    columns = scores[:, None] if scores.ndim == 1 else scores
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in range(columns.shape[1]):
        positive = (y_true == (1 if columns.shape[1] == 1 else c)).astype(int)
        if positive.min() == positive.max():
            continue
        fpr, tpr, _ = roc_curve(positive, columns[:, c])
        name = class_names[c] if class_names is not None else (str(c) if columns.shape[1] > 1 else "positive")
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, columns[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_eval_tables(eval_dir: str | Path, summary: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                      per_case: Sequence[Mapping[str, Any]] | Any = (), *, prefix: str = "") -> tuple[Path, Path]:
    """Write ``<eval_dir>/<prefix>summary.csv`` and ``<eval_dir>/<prefix>per_case.csv``: the one file scheme.

    ``summary``: one mapping (one row: metric -> value) or several rows (e.g. one per split or checkpoint).
    ``per_case``: rows (one per image / case / volume) or a DataFrame; written even when empty (header only), so
    a consumer never has to guess whether evaluation ran. Only rank 0 writes. Returns both paths.
    """
    import pandas as pd

    eval_dir = Path(eval_dir)
    rows = [dict(summary)] if isinstance(summary, Mapping) else [dict(r) for r in summary]
    per_case_frame = per_case if isinstance(per_case, pd.DataFrame) else pd.DataFrame(list(per_case))
    summary_path = eval_dir / f"{prefix}summary.csv"
    per_case_path = eval_dir / f"{prefix}per_case.csv"
    if dist_info().is_main:
        eval_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(summary_path, index=False)
        per_case_frame.to_csv(per_case_path, index=False)
    return summary_path, per_case_path
