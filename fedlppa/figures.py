"""Figures of a FedLPPA run: per-site Dice, prompt similarity per round, pseudo-label Dice per round, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.tracking import image_grid, overlay_mask, pyplot, save_figure, save_png
from fedlppa.data import SiteData

__all__ = ["per_site_dice", "similarity_curves", "pseudo_dice_curve", "overlays"]


def per_site_dice(per_site: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    sites = list(per_site)
    ax.bar(sites, [per_site[s]["dice"] for s in sites], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice (test)")
    ax.set_title(title)
    return save_figure(fig, path)


def _round_curves(history: Sequence[dict], prefix: str, ylabel: str, path: Path, label, width=None) -> Path | None:
    """One line per ``<prefix><name>`` column of the round history; None when the history has none."""
    keys = sorted({k for row in history for k in row if k.startswith(prefix)})
    if not keys:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [row["round"] for row in history]
    for key in keys:
        ax.plot(rounds, [row.get(key, np.nan) for row in history], label=label(key[len(prefix):]),
                lw=width(key) if width else 1.5)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.legend(ncol=2, fontsize=7)
    return save_figure(fig, path)


def similarity_curves(history: Sequence[dict], path: Path) -> Path | None:
    """Prompt similarity s_ik per site pair and round (the same-style pair b/d drawn thick)."""
    return _round_curves(history, "sim_", "prompt similarity s_ik", path, str,
                         lambda key: 2.5 if key == "sim_bd" else 1)


def pseudo_dice_curve(history: Sequence[dict], path: Path) -> Path | None:
    """Dice of each site's pseudo-labels against its full mask, per round."""
    return _round_curves(history, "pseudo_dice_", "pseudo-label Dice vs. full mask", path,
                         lambda site: f"site {site}")


def overlays(eval_sites: Sequence[SiteData], predictions: dict[int, np.ndarray], path: Path, count: int = 2
             ) -> Path:
    """Per site: image, ground truth and prediction of the first ``count`` test images."""
    rows = []
    for k, site in enumerate(eval_sites):
        for i, case in enumerate(site.test[:count]):
            img = case.image[0] if case.image.shape[0] == 1 else np.moveaxis(case.image, 0, -1)
            rows.append([img, overlay_mask(img, case.label), overlay_mask(img, predictions[k][i])])
    return save_png(image_grid(rows), path)
