"""Gradient-based patch selection (official ``--patch_select grad_window``: ``_get_crop``, ``split_patch``,
``cal_cprob``, ``image_grad_gray`` in ``src/data/burst_v3.py``).

The LR image ``(ih, iw)`` is split into an ``(ih // p) x (iw // p)`` grid of windows (``p`` = LR patch size). Each
window gets a score from 3x3 Sobel derivatives of the LR image:

- ``magnitude`` (default, the paper's intent): sum over the window of ``sqrt(Gx^2 + Gy^2)``;
- ``signed_official`` (bit-faithful): sum over the window of ``0.5 Gx + 0.5 Gy`` with sign. This telescopes to a
  boundary term, so a window with a vessel in its middle scores 0 (the quirk the tests pin down).

Scores are min-max normalised over the windows and divided by their sum (the lowest window gets probability 0);
when all scores are equal (e.g. a constant image) the official code divides 0 by 0, ours falls back to uniform.
A window is drawn with these probabilities; the patch top-left is uniform in ``[window start, window start +
window size]`` (``- p`` for the last row/column of windows), clipped so the patch stays inside the image.
``random`` (the ablation) draws the top-left uniformly over the whole image. HR crop = s x LR crop.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["window_grid", "window_scores", "window_probabilities", "sample_patch", "crop_pair"]


def window_grid(shape: tuple[int, int], patch: int) -> tuple[int, int, int, int]:
    """``(n_h, n_w, window_h, window_w)`` of the window grid on an LR image of ``shape``."""
    ih, iw = shape
    if ih < patch or iw < patch:
        raise ValueError(f"LR image {ih}x{iw} is smaller than the LR patch size {patch}; lower data.patch_size")
    n_h, n_w = ih // patch, iw // patch
    return n_h, n_w, ih // n_h, iw // n_w


def window_scores(lr: np.ndarray, patch: int, score: str = "magnitude") -> np.ndarray:
    """``(n_h, n_w)`` gradient score of every window of the ``(ih, iw)`` LR image."""
    img = np.asarray(lr, np.float64)
    gx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3)
    if score == "magnitude":
        per_pixel = np.sqrt(gx * gx + gy * gy)
    elif score == "signed_official":
        per_pixel = 0.5 * gx + 0.5 * gy
    else:
        raise ValueError(f"patch_selection.score must be magnitude or signed_official, got {score!r}")
    n_h, n_w, wh, ww = window_grid(img.shape, patch)
    return per_pixel[: n_h * wh, : n_w * ww].reshape(n_h, wh, n_w, ww).sum(axis=(1, 3))


def window_probabilities(scores: np.ndarray) -> np.ndarray:
    """Official normalisation: min-max over windows, divided by the sum; uniform when all scores are equal."""
    flat = np.asarray(scores, np.float64).ravel()
    lo, hi = flat.min(), flat.max()
    if not np.isfinite(hi - lo) or hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return np.full(flat.shape, 1.0 / flat.size)
    norm = (flat - lo) / (hi - lo)
    return norm / norm.sum()


def _offset(rng: np.random.Generator, index: int, count: int, window: int, patch: int, limit: int) -> int:
    start = index * window
    high = start + window if index < count - 1 else start + window - patch
    high = min(max(high, start), limit - patch)
    return int(rng.integers(start, high + 1))


def sample_patch(lr: np.ndarray, patch: int, rng: np.random.Generator, mode: str = "grad_window",
                 score: str = "magnitude") -> tuple[int, int]:
    """Top-left ``(y, x)`` of an LR patch of side ``patch``; always ``0 <= y <= ih - patch`` (same for x)."""
    ih, iw = lr.shape
    if mode == "random":
        window_grid((ih, iw), patch)
        return int(rng.integers(0, ih - patch + 1)), int(rng.integers(0, iw - patch + 1))
    if mode != "grad_window":
        raise ValueError(f"patch_selection.mode must be grad_window or random, got {mode!r}")
    n_h, n_w, wh, ww = window_grid((ih, iw), patch)
    probs = window_probabilities(window_scores(lr, patch, score))
    k = int(rng.choice(probs.size, p=probs))
    r, c = divmod(k, n_w)
    return _offset(rng, r, n_h, wh, patch, ih), _offset(rng, c, n_w, ww, patch, iw)


def crop_pair(lr: np.ndarray, hr: np.ndarray, y: int, x: int, patch: int, scale: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """LR crop ``(patch, patch)`` at ``(y, x)`` and the HR crop ``(s patch, s patch)`` at ``(s y, s x)``."""
    return (lr[y:y + patch, x:x + patch],
            hr[scale * y: scale * (y + patch), scale * x: scale * (x + patch)])
