"""Prompts for SAM from a binary tumour mask ("pseudo-labels as prompts to the fine-tuned SAM", paper abstract).

One box per connected component of at least ``min_area`` pixels, enlarged by ``box_margin`` pixels and clipped
to the slice, in SAM's XYXY convention (x = column, y = row, the far edge exclusive: a one-pixel component at
(r, c) gives (c, r, c + 1, r + 1)); optionally one positive point per box at the component's innermost pixel
(maximum of the distance transform). Training-time boxes get a random per-edge jitter (MedSAM's ``bbox_shift``
of 20 px at 1024 is about 2 % of the side).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["components", "boxes_from_mask", "component_points", "jitter_box"]

_EIGHT = np.ones((3, 3), bool)


def components(mask: np.ndarray, min_area: int = 0) -> list[np.ndarray]:
    """Boolean masks of the 8-connected components of ``mask`` with at least ``min_area`` pixels, largest first."""
    labels, n = ndimage.label(np.asarray(mask, bool), structure=_EIGHT)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    return [labels == i + 1 for i in order if sizes[i] >= max(min_area, 1)]


def _box(component: np.ndarray, margin: int, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.nonzero(component)
    h, w = shape
    return np.array([max(cols.min() - margin, 0), max(rows.min() - margin, 0), min(cols.max() + 1 + margin, w),
                     min(rows.max() + 1 + margin, h)], np.float32)


def boxes_from_mask(mask: np.ndarray, min_area: int = 0, margin: int = 0) -> np.ndarray:
    """``(N, 4)`` float32 XYXY boxes of the components of ``mask`` (``(0, 4)`` when there is none)."""
    comps = components(mask, min_area)
    if not comps:
        return np.zeros((0, 4), np.float32)
    return np.stack([_box(c, margin, mask.shape) for c in comps])


def component_points(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """``(N, 2)`` float32 XY positive points (pixel centres) at each component's innermost pixel."""
    out = []
    for comp in components(mask, min_area):
        dist = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        out.append((c + 0.5, r + 0.5))
    return np.asarray(out, np.float32).reshape(-1, 2)


def jitter_box(box: np.ndarray, shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Move each edge of an XYXY box outwards by a uniform 0 .. ``fraction`` x side (clipped to the slice)."""
    h, w = shape
    shift = rng.uniform(0, fraction, size=4) * np.array([w, h, w, h])
    out = box + shift * np.array([-1, -1, 1, 1])
    return np.clip(out, 0, [w, h, w, h]).astype(np.float32)
