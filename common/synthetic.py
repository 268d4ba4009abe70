"""Synthetic-image primitives used by several projects' ``synth.py``: smooth fields, ellipses and blobs, a branching
vessel tree with an exact mask, and noise models. Every function takes a ``numpy.random.Generator`` (or a seed)
and is deterministic given it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["as_rng", "smooth_field", "ellipse_mask", "random_blobs", "VesselTree", "vessel_tree", "rasterise_segments",
           "gaussian_noise", "speckle_noise"]


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def smooth_field(shape: tuple[int, ...], scale: float, rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to [0, 1]; ``scale`` is the filter sigma in pixels (feature size)."""
    rng = as_rng(rng)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=scale, mode="wrap")
    lo, hi = field.min(), field.max()
    return ((field - lo) / (hi - lo + 1e-12)).astype(np.float32)


def ellipse_mask(shape: tuple[int, int], center: tuple[float, float], axes: tuple[float, float],
                 angle_deg: float = 0.0) -> np.ndarray:
    """Boolean ``(H, W)`` mask of a filled ellipse; ``center`` = (row, col), ``axes`` = semi-axes (rows, cols)
    before rotation by ``angle_deg`` (counter-clockwise)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    theta = math.radians(angle_deg)
    dr, dc = rows - center[0], cols - center[1]
    u = dr * math.cos(theta) + dc * math.sin(theta)
    v = -dr * math.sin(theta) + dc * math.cos(theta)
    return (u / max(axes[0], 1e-6)) ** 2 + (v / max(axes[1], 1e-6)) ** 2 <= 1.0


def random_blobs(shape: tuple[int, int], count: int, radius: tuple[float, float],
                 rng: int | np.random.Generator | None = None, margin: float = 0.0) -> np.ndarray:
    """Integer ``(H, W)`` map of ``count`` random ellipses labelled 1..count (later ones overwrite earlier ones)."""
    rng = as_rng(rng)
    out = np.zeros(shape, np.int32)
    for label in range(1, count + 1):
        r = rng.uniform(*radius, size=2)
        lo = np.maximum(r.max() + margin, 0)
        center = (rng.uniform(lo, shape[0] - lo), rng.uniform(lo, shape[1] - lo))
        out[ellipse_mask(shape, center, tuple(r), rng.uniform(0, 180))] = label
    return out


@dataclass
class VesselTree:
    """A rendered vessel tree: ``intensity`` in [0, 1] (anti-aliased, float32), exact boolean ``mask`` (pixels whose
    centre lies inside a vessel), ``radius`` map (local vessel radius on the mask, 0 elsewhere) and the
    ``segments`` as rows ``(r0, c0, r1, c1, radius)``."""

    intensity: np.ndarray
    mask: np.ndarray
    radius: np.ndarray
    segments: np.ndarray


def vessel_tree(shape: tuple[int, int], rng: int | np.random.Generator | None = None, *, roots: int = 2,
                depth: int = 6, root_radius: float = 4.0, taper: float = 0.72, min_radius: float = 0.6,
                segment_length: float = 0.12, branch_angle: float = 28.0, wobble: float = 12.0,
                root_positions: str = "border") -> VesselTree:
    """A seeded recursive branching tree (Murray-like tapering), drawn segment by segment.

    Each vessel is a chain of short wobbling segments; at the end of a chain it splits in two children whose
    radii shrink by ``taper``, turning by about ``branch_angle`` degrees to either side, until ``depth`` levels
    or ``min_radius``. ``segment_length`` is a fraction of the image's smaller side. Roots start on the border
    pointing inwards (``root_positions="border"``) or near the centre pointing outwards (``"center"``).
    The mask is exact: a pixel is vessel when its centre lies within ``radius`` of a segment.
    """
    rng = as_rng(rng)
    h, w = shape
    side = min(h, w)
    segments: list[tuple[float, float, float, float, float]] = []

    def grow(r: float, c: float, angle: float, radius: float, level: int) -> None:
        steps = int(rng.integers(3, 6))
        for _ in range(steps):
            angle += math.radians(rng.normal(0.0, wobble))
            length = segment_length * side * rng.uniform(0.6, 1.0) / steps * 2.5
            r1, c1 = r + length * math.sin(angle), c + length * math.cos(angle)
            segments.append((r, c, r1, c1, radius))
            r, c = r1, c1
            if not (-0.1 * h < r < 1.1 * h and -0.1 * w < c < 1.1 * w):
                return
        if level >= depth or radius * taper < min_radius:
            return
        spread = math.radians(branch_angle * rng.uniform(0.7, 1.3))
        for sign in (-1.0, 1.0):
            grow(r, c, angle + sign * spread, radius * taper * rng.uniform(0.9, 1.1), level + 1)

    for _ in range(roots):
        if root_positions == "center":
            r, c = h / 2 + rng.normal(0, side / 10), w / 2 + rng.normal(0, side / 10)
            angle = rng.uniform(0, 2 * math.pi)
        else:
            edge = int(rng.integers(4))
            t = rng.uniform(0.2, 0.8)
            r, c, angle = [(0.0, t * w, math.pi / 2), (h - 1.0, t * w, -math.pi / 2),
                           (t * h, 0.0, 0.0), (t * h, w - 1.0, math.pi)][edge]
            angle += rng.normal(0, 0.3)
        grow(r, c, angle, root_radius, 0)

    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 5)
    return rasterise_segments(shape, seg)


def rasterise_segments(shape: tuple[int, int], segments: np.ndarray, supersample: int = 4) -> VesselTree:
    """Draw capsules ``segments`` (N, 5) = rows ``(r0, c0, r1, c1, radius)`` in pixel coordinates (row, column of
    pixel centres) into a :class:`VesselTree`: the mask is exact (a pixel is inside when its centre lies within
    ``radius`` of the segment), ``radius`` holds the largest radius covering each pixel, and ``intensity`` is an
    anti-aliased rendering (lines drawn at ``supersample`` times the resolution, then area-averaged). Any curve
    model (a branching tree, arcades, a single vessel) can be drawn this way from its polyline."""
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 5)
    if len(seg) and (seg[:, 4] < 0).any():
        raise ValueError("rasterise_segments: radii (column 4) must be >= 0")
    if supersample < 1:
        raise ValueError(f"rasterise_segments: supersample must be >= 1, got {supersample}")
    h, w = shape
    mask = np.zeros(shape, bool)
    radius_map = np.zeros(shape, np.float32)
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    for r0, c0, r1, c1, rad in seg:
        pad = rad + 1.5
        top, bottom = int(max(min(r0, r1) - pad, 0)), int(min(max(r0, r1) + pad + 1, h))
        left, right = int(max(min(c0, c1) - pad, 0)), int(min(max(c0, c1) + pad + 1, w))
        if top >= bottom or left >= right:
            continue
        rr, cc = rows[top:bottom, left:right], cols[top:bottom, left:right]
        dr, dc = r1 - r0, c1 - c0
        t = np.clip(((rr - r0) * dr + (cc - c0) * dc) / max(dr * dr + dc * dc, 1e-12), 0.0, 1.0)
        dist = np.hypot(rr - (r0 + t * dr), cc - (c0 + t * dc))
        inside = dist <= rad
        mask[top:bottom, left:right] |= inside
        sub = radius_map[top:bottom, left:right]
        np.maximum(sub, np.where(inside, rad, 0.0).astype(np.float32), out=sub)
    big = np.zeros((h * supersample, w * supersample), np.float32)
    for r0, c0, r1, c1, rad in seg:
        p0 = (int(round((c0 + 0.5) * supersample)), int(round((r0 + 0.5) * supersample)))
        p1 = (int(round((c1 + 0.5) * supersample)), int(round((r1 + 0.5) * supersample)))
        cv2.line(big, p0, p1, 1.0, thickness=max(1, int(round(2 * rad * supersample))), lineType=cv2.LINE_AA)
    intensity = cv2.resize(np.clip(big, 0, 1), (w, h), interpolation=cv2.INTER_AREA)
    return VesselTree(intensity.astype(np.float32), mask, radius_map, seg)


def gaussian_noise(image: np.ndarray, sigma: float, rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Additive white Gaussian noise with standard deviation ``sigma`` (float32)."""
    rng = as_rng(rng)
    return (np.asarray(image, np.float32) + rng.normal(0.0, sigma, np.shape(image))).astype(np.float32)


def speckle_noise(image: np.ndarray, looks: float = 4.0, rng: int | np.random.Generator | None = None) -> np.ndarray:
    """Multiplicative speckle: ``image * G`` with ``G ~ Gamma(looks, 1/looks)`` (mean 1, variance 1/looks), the
    fully developed speckle model of coherent imaging (OCT, ultrasound, photoacoustics)."""
    rng = as_rng(rng)
    gain = rng.gamma(shape=looks, scale=1.0 / looks, size=np.shape(image))
    return (np.asarray(image, np.float32) * gain).astype(np.float32)
