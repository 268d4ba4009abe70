"""Experiment tracking: scalars to TensorBoard and ``metrics.csv`` in one call, image grids, figures, README report.

Only rank 0 writes; on other ranks a :class:`Tracker` is silent. Tags are namespaced (``train/loss``,
``val/auc``); the CSV gets one row per ``log`` call with the union of all columns seen so far.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.runtime import dist_info

__all__ = ["Tracker", "to_uint8_rgb", "overlay_mask", "image_grid", "save_png", "plot_curves",
           "plot_confusion_matrix", "save_figure", "write_comparison", "update_readme_results", "main"]


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
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Tight layout, write a matplotlib figure to ``path`` (folders created) and close it."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_curves(metrics_csv: str | Path, keys: Sequence[str], path: str | Path, x: str = "step") -> Path:
    """Line plot of the given columns of a ``metrics.csv`` against ``x``; missing values are left as gaps."""
    import pandas as pd

    plt = _pyplot()
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
    plt = _pyplot()
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
    lines = [f"# {title}", "", _markdown_table(frame), ""]
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


def _markdown_table(frame: Any) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _headline(csv_path: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(csv_path)
    metrics = [c for c in frame.columns if c != "method" and not c.endswith("_std")
               and pd.api.types.is_numeric_dtype(frame[c])]
    if frame.empty or not metrics:
        return ""
    row = frame.iloc[0]
    value = f"{metrics[0]} {row[metrics[0]]:.3f}"
    if f"{metrics[0]}_std" in frame.columns and not pd.isna(row[f"{metrics[0]}_std"]):
        value += f" ± {row[f'{metrics[0]}_std']:.3f}"
    return value


def update_readme_results(readme: str | Path, runs_root: str | Path, projects: Sequence[str]) -> dict[str, str]:
    """Fill the last column ("ours") of each project's row in the README results table.

    A project's row is the table row whose first cell links ``<project>/``; the value is the headline of the newest
    ``runs/<project>/reproduce/<run>/comparison.csv`` (by modification time; first row, first metric), with the run
    folder as text (``runs/`` is not versioned, so no link). Rows of
    projects without a reproduce run are left as they are. Returns ``{project: new cell}``.
    """
    readme = Path(readme)
    lines = readme.read_text().splitlines()
    updated: dict[str, str] = {}
    for project in projects:
        runs = sorted(Path(runs_root, project, "reproduce").glob("*/comparison.csv"), key=lambda p: p.stat().st_mtime)
        if not runs:
            continue
        newest = runs[-1]
        cell = f"{_headline(newest)} (`{newest.parent.relative_to(readme.parent)}`)"
        for i, line in enumerate(lines):
            cells = line.split("|")
            if line.startswith("|") and len(cells) > 3 and f"({project}/)" in cells[1]:
                cells[-2] = f" {cell} "
                lines[i] = "|".join(cells)
                updated[project] = cell
    readme.write_text("\n".join(lines) + "\n")
    return updated


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m common.tracking report``: the ``make report`` target."""
    from common.rundir import repo_root

    parser = argparse.ArgumentParser(description="Copy every project's newest reproduce result into README.md")
    parser.add_argument("command", choices=["report"])
    parser.add_argument("--readme", default=str(repo_root() / "README.md"))
    parser.add_argument("--runs", default=str(repo_root() / "runs"))
    parser.add_argument("projects", nargs="+")
    args = parser.parse_args(argv)
    updated = update_readme_results(args.readme, args.runs, args.projects)
    for project in args.projects:
        print(f"{project:12s} {updated.get(project, '(no reproduce run yet)')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
