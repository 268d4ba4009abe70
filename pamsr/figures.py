"""Figures: LR / bicubic / ours / HR crops in polar and Cartesian form (the paper's qualitative comparison figures),
written as PNG by ``reproduce.py`` / ``eval.py`` and logged to TensorBoard during training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.tracking import image_grid, save_png
from pamsr.geometry import polar_to_cartesian, unpad_image

__all__ = ["nearest_upsample", "crop_box", "crop_grid", "comparison_figure"]


def nearest_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """``(h, w)`` -> ``(h*s, w*s)`` by pixel repetition (how the LR is shown next to HR-sized images)."""
    return np.kron(lr, np.ones((scale, scale), dtype=lr.dtype))


def crop_box(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the ``size x size`` crop with the most gradient energy (a vessel-rich region) of ``image``."""
    gy, gx = np.gradient(image.astype(np.float64))
    energy = np.hypot(gx, gy)
    h, w = image.shape
    size = min(size, h, w)
    best, corner = -1.0, (0, 0)
    step = max(size // 4, 1)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            e = energy[y:y + size, x:x + size].sum()
            if e > best:
                best, corner = e, (y, x)
    return corner


def crop_grid(panels: Mapping[str, np.ndarray], pad: int, crop: int = 128) -> np.ndarray:
    """``(H, W, 3)`` uint8 grid: two rows (polar crop, Cartesian crop) x one column per panel (same order as
    ``panels``: e.g. LR (nearest upsampled), bicubic, ours, HR; all padded ``(H, W)`` polar images in [0, 1]).
    Crops are taken where the last panel (the HR) has the most vessel edges."""
    names = list(panels)
    hr = panels[names[-1]]
    y, x = crop_box(hr, crop)
    cart = {k: polar_to_cartesian(unpad_image(np.clip(v, 0, 1), pad)) for k, v in panels.items()}
    cy, cx = crop_box(cart[names[-1]], crop)
    polar_row = [np.clip(panels[k][y:y + crop, x:x + crop], 0, 1) for k in names]
    cart_row = [cart[k][cy:cy + crop, cx:cx + crop] for k in names]
    fixed = [[(t * 255).round().astype(np.uint8) for t in row] for row in (polar_row, cart_row)]
    return image_grid(fixed, pad=4)


def comparison_figure(panels: Mapping[str, np.ndarray], pad: int, path: str | Path, crop: int = 128) -> Path:
    """:func:`crop_grid` saved as PNG; the column titles go into the caption of the page that shows it."""
    return save_png(crop_grid(panels, pad, crop), path)
