"""Prompts for SAM from a binary tumour mask ("pseudo-labels as prompts to the fine-tuned SAM", paper abstract).

One box per connected component of at least ``min_area`` pixels, enlarged by ``box_margin`` pixels and clipped
to the slice, in SAM's XYXY convention (x = column, y = row, the far edge exclusive: a one-pixel component at
(r, c) gives (c, r, c + 1, r + 1)); optionally one positive point per box at the component's innermost pixel
(maximum of the distance transform). Training-time boxes get a random per-edge jitter (MedSAM's ``bbox_shift``
of 20 px at 1024 is about 2 % of the side); :func:`margin_box` draws them the way inference makes them (tight box +
``box_margin``), each edge moved in or out by up to ``jitter`` px, since an SSL component is itself a few pixels
too small or too large (OURS: MedSAM only moves edges outwards and adds no margin at inference).
:func:`box_prior` is the ellipse inscribed in each box, the shape a box alone implies (the dense mask prompt of
``sam.mask_prompt: ellipse`` and the baseline the tiny SAM must beat).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["components", "boxes_from_mask", "component_points", "jitter_box", "margin_box", "box_prior"]

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


def margin_box(box: np.ndarray, shape: tuple[int, int], margin: float, jitter: float, rng: np.random.Generator
               ) -> np.ndarray:
    """A training box like an inference one: each edge of the tight XYXY ``box`` moved outwards by ``margin`` plus a
    uniform -``jitter`` .. +``jitter`` px (clipped to the slice, at least one pixel wide)."""
    h, w = shape
    shift = margin + rng.uniform(-jitter, jitter, size=4) if jitter > 0 else np.full(4, float(margin))
    out = np.asarray(box, np.float64) + shift * np.array([-1, -1, 1, 1])
    out = np.clip(out, 0, [w, h, w, h])
    out[2] = max(out[2], min(out[0] + 1, w))
    out[3] = max(out[3], min(out[1] + 1, h))
    out[0] = min(out[0], out[2] - 1)
    out[1] = min(out[1], out[3] - 1)
    return out.astype(np.float32)


def box_prior(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` boolean ellipses inscribed in XYXY ``boxes`` (centre and semi-axes from the box, far edge
    exclusive)."""
    h, w = shape
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    out = np.zeros((len(boxes), h, w), bool)
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        cr, cc = (y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5
        ar, ac = max((y1 - y0) / 2, 1e-6), max((x1 - x0) / 2, 1e-6)
        out[k] = ((rows - cr) / ar) ** 2 + ((cols - cc) / ac) ** 2 <= 1.0
    return out
