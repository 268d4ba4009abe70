"""Headroom of the synthetic super-resolution problem: how far bicubic interpolation and the best linear predictor
stay from the noise-free ground truth (our calibration of the synthetic data; no counterpart in the paper).

- ``bicubic``: PSNR of bicubic(LR) (aligned to the decimation grid) against the clean image.
- ``linear``: the best linear predictor of the clean image from a 6x6 LR neighbourhood, one least-squares filter
  (36 taps + offset) per HR sub-pixel phase, fitted on the training images, evaluated on the test images: what any
  linear method can reach at best. The gap above these is the room only a non-linear network can use.

Images are ``PolarImage`` items with ``clean`` set (``data.load_images`` on the synthetic set); SR is quantised
to 1/255 as in the official metric protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from common.metrics import psnr
from pamsr.engine import quantise
from pamsr.models import bicubic_upsample

__all__ = ["TAPS", "neighbourhoods", "fit_linear", "apply_linear", "measure"]

TAPS = 6


def neighbourhoods(lr: np.ndarray, taps: int = TAPS) -> np.ndarray:
    """``(h, w)`` -> ``(h, w, taps**2)``: the ``taps x taps`` LR neighbourhood of every LR pixel (edge-extended),
    rows ``y - taps/2 + 1 .. y + taps/2`` (the HR phases of LR pixel ``y`` lie between ``y`` and ``y + 1``)."""
    h, w = lr.shape
    half = taps // 2
    padded = np.pad(lr, ((half - 1, half), (half - 1, half)), mode="edge")
    return np.stack([padded[i:i + h, j:j + w] for i in range(taps) for j in range(taps)], axis=-1)


def _design(lr: np.ndarray) -> np.ndarray:
    feats = neighbourhoods(lr.astype(np.float64)).reshape(-1, TAPS * TAPS)
    return np.concatenate([feats, np.ones((len(feats), 1))], axis=1)


def fit_linear(images: Sequence, scale: int, max_pixels: int = 200_000, seed: int = 0) -> dict:
    """Least-squares filter per HR phase ``(dy, dx)`` from the LR of ``images`` to their clean targets (at most
    ``max_pixels`` LR positions, drawn at random, per phase)."""
    rng = np.random.default_rng(seed)
    design = np.concatenate([_design(item.lr) for item in images])
    keep = rng.permutation(len(design))[:max_pixels]
    filters = {}
    for dy in range(scale):
        for dx in range(scale):
            target = np.concatenate([item.clean[dy::scale, dx::scale].reshape(-1) for item in images])
            filters[dy, dx] = np.linalg.lstsq(design[keep], target[keep], rcond=None)[0]
    return filters


def apply_linear(filters: dict, lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape
    design = _design(lr)
    out = np.zeros((h * scale, w * scale))
    for (dy, dx), coef in filters.items():
        out[dy::scale, dx::scale] = (design @ coef).reshape(h, w)
    return out


def measure(train: Sequence, test: Sequence, scale: int) -> dict[str, float]:
    """Mean PSNR (dB) against the clean image on ``test``: ``bicubic``, ``linear`` (fitted on ``train``) and the
    HR scan itself (``hr_scan``: noise, registration residue; a network trained on noisy targets may exceed it)."""
    if any(item.clean is None for item in [*train, *test]):
        raise ValueError("headroom needs the clean ground truth (data.clean_dataset; synthetic data only)")
    filters = fit_linear(train, scale)
    rows = []
    for item in test:
        lr = torch.from_numpy(np.ascontiguousarray(item.lr, dtype=np.float32))[None, None]
        bicubic = bicubic_upsample(lr, scale)[0, 0].numpy()
        rows.append({"bicubic": psnr(quantise(bicubic), item.clean, 1.0),
                     "linear": psnr(quantise(apply_linear(filters, item.lr, scale)), item.clean, 1.0),
                     "hr_scan": psnr(item.hr, item.clean, 1.0)})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
