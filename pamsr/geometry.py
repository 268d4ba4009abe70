"""Rotational-scan geometry (official ``Trainer_burst_ema.rec_img_test`` and ``src/loss/rec_map.npy``).

A polar image has ``N`` rows (B-scans at angles ``theta_k = k * pi / N``, covering 180 degrees) and ``M`` columns
(positions along a diameter, signed radius ``r = M/2 - c``). Point ``(x, y) = (r cos theta, r sin theta)`` lands on
Cartesian pixel ``(row, col) = (round(y + M/2), round(x + M/2))``, clipped to the ``M x M`` canvas; where several
polar pixels land on the same Cartesian pixel the maximum wins.

Official images are 1000 x 1000 and are zero-padded by 12 px per side to 1024 x 1024 before decimation.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["pad_image", "unpad_image", "cartesian_targets", "polar_to_cartesian", "cartesian_to_polar",
           "rec_index_map"]


def pad_image(image: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad an ``(H, W)`` image by ``pad`` pixels on every side -> ``(H + 2 pad, W + 2 pad)``."""
    return np.pad(image, pad, mode="constant") if pad > 0 else image


def unpad_image(image: np.ndarray, pad: int) -> np.ndarray:
    """Inverse of :func:`pad_image` on the last two axes."""
    return image[..., pad:-pad, pad:-pad] if pad > 0 else image


def cartesian_targets(n_angles: int, width: int, canvas: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian ``(row, col)`` integer targets of every polar pixel, each ``(n_angles, width)``.

    ``canvas`` (default ``width``) is the side of the square Cartesian image; the scan centre is its middle.
    """
    canvas = width if canvas is None else canvas
    theta = np.arange(n_angles, dtype=np.float64)[:, None] * np.pi / n_angles
    radius = width / 2.0 - np.arange(width, dtype=np.float64)[None, :]
    x, y = radius * np.cos(theta), radius * np.sin(theta)
    rows = np.clip(np.round(y + canvas / 2.0), 0, canvas - 1).astype(np.int64)
    cols = np.clip(np.round(x + canvas / 2.0), 0, canvas - 1).astype(np.int64)
    return rows, cols


def polar_to_cartesian(polar: np.ndarray) -> np.ndarray:
    """Scan conversion ``(N, M)`` polar -> ``(M, M)`` Cartesian, maximum wins, unfilled pixels 0 (no rescaling)."""
    polar = np.asarray(polar, dtype=np.float64)
    n, m = polar.shape
    rows, cols = cartesian_targets(n, m)
    out = np.full((m, m), -np.inf)
    np.maximum.at(out, (rows.ravel(), cols.ravel()), polar.ravel())
    out[~np.isfinite(out)] = 0.0
    return out


def cartesian_to_polar(cartesian: np.ndarray, n_angles: int, width: int | None = None,
                       column_offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Sample a ``(S, S)`` Cartesian image on the rotational-scan grid -> ``(n_angles, width)`` polar (bilinear).

    ``column_offset`` (scalar or one value per row, in pixels) displaces the sampling positions of a row along its
    diameter: row ``k`` column ``c`` samples radius ``width/2 - (c - offset_k)``, i.e. the row content appears shifted
    by ``+offset_k`` columns. This models scanner wobble between B-scans with sub-pixel accuracy.
    """
    s = cartesian.shape[0]
    width = s if width is None else width
    offset = np.broadcast_to(np.asarray(column_offset, dtype=np.float64).reshape(-1, 1), (n_angles, 1))
    theta = np.arange(n_angles, dtype=np.float64)[:, None] * np.pi / n_angles
    radius = width / 2.0 - (np.arange(width, dtype=np.float64)[None, :] - offset)
    map_x = (radius * np.cos(theta) + s / 2.0).astype(np.float32)
    map_y = (radius * np.sin(theta) + s / 2.0).astype(np.float32)
    return cv2.remap(np.asarray(cartesian, np.float32), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def rec_index_map(n_angles: int, width: int, pad: int) -> torch.Tensor:
    """Flat Cartesian index of every pixel of the padded polar grid (the regenerated ``rec_map.npy``).

    Returns a long tensor ``(n_angles + 2 pad, width + 2 pad)``; canvas side ``width + 2 pad``. Padding pixels get
    index ``canvas**2`` (a dump slot dropped after scattering).
    """
    canvas = width + 2 * pad
    rows, cols = cartesian_targets(n_angles, width, canvas)
    flat = np.full((n_angles + 2 * pad, width + 2 * pad), canvas * canvas, dtype=np.int64)
    flat[pad:pad + n_angles, pad:pad + width] = rows * canvas + cols
    return torch.from_numpy(flat)
