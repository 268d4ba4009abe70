"""Figures of a run: overlays of coarse vs fine disc/cup and fovea on hard cases, coarse heatmaps, training
curves, and the real-photograph smoke figure."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.rundir import RunDir
from common.tracking import image_grid, plot_curves, save_png

__all__ = ["draw_prediction", "write_run_figures", "draw_contours"]

GREEN, BLUE, YELLOW, CYAN, WHITE = (0, 255, 0), (40, 120, 255), (255, 230, 0), (0, 255, 255), (255, 255, 255)


def draw_contours(image: np.ndarray, oc: np.ndarray, od: np.ndarray, fovea, colour_od, colour_oc,
                  thickness: int = 1) -> np.ndarray:
    """``image`` with disc/cup contours and a fovea cross (x, y) drawn on a copy."""
    out = np.ascontiguousarray(image.copy())
    for mask, colour in ((od, colour_od), (oc, colour_oc)):
        contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    if fovea is not None:
        size = max(3, image.shape[0] // 60)
        cv2.drawMarker(out, (int(round(fovea[0])), int(round(fovea[1]))), colour_od, cv2.MARKER_CROSS, size,
                       thickness)
    return out


def draw_prediction(item, pred) -> list[np.ndarray]:
    """[truth, coarse, final] panels of one image (truth white, predictions green/blue)."""
    from joinedtrans.targets import mask_to_channels

    oc, od, _ = mask_to_channels(item.mask, item.palm).astype(bool)
    truth = draw_contours(item.image, oc, od, item.case.fovea, WHITE, WHITE)
    coarse = draw_contours(item.image, pred.coarse.oc, pred.coarse.od, pred.coarse.fovea_xy, GREEN, BLUE)
    final = draw_contours(item.image, pred.oc, pred.od, pred.fovea, GREEN, BLUE)
    return [truth, coarse, final]


def _heat_panel(item, pred) -> np.ndarray:
    if pred.coarse.fovea_map is None:
        return np.zeros_like(item.image)
    heat = (np.clip(pred.coarse.fovea_map, 0, 1) * 255).astype(np.uint8)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO)[..., ::-1]
    return (0.5 * item.image + 0.5 * colour).astype(np.uint8)


def write_run_figures(pipe, items, rows, cfg, data, run: RunDir, device, max_rows: int = 6) -> list[Path]:
    """``figures/hard_cases.png`` (truth | coarse | final | coarse fovea heatmap per hard image, else the first
    images) and the training curves."""
    from joinedtrans.pipeline import infer

    hard = [i for i, it in enumerate(items) if it.case.hard][:max_rows] or list(range(min(max_rows, len(items))))
    chosen = [items[i] for i in hard]
    written = []
    if chosen:
        preds = infer(pipe, chosen, cfg, data.mean, data.std, device)
        grid = image_grid([[*draw_prediction(it, p), _heat_panel(it, p)] for it, p in zip(chosen, preds)])
        written.append(save_png(grid, run.figures / "hard_cases.png"))
    if run.metrics_csv.is_file():
        for key, name in (("coarse/train_loss", "coarse_loss.png"), ("coarse/val_score", "coarse_val_score.png"),
                          ("fine/train_loss", "fine_loss.png"), ("fovea/train_loss", "fovea_loss.png")):
            try:
                written.append(plot_curves(run.metrics_csv, [key], run.figures / name))
            except (KeyError, ValueError):
                continue
    return written
