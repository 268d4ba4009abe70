"""Hand-off from the coarse to the fine stage (JOINED ``Coarse/evaluate_seg_smp_MSE.py::evaluate``).

The coarse segmentation is rounded, OC and OD each reduced to the largest component with holes filled, and
upsampled to the original size (nearest). The ROI centre is the mean of the marginal-argmax centres of the OC and
OD channels; the crop (448 x 448 in JOINED) is taken at original resolution and shifted back inside the image when
it would leave it; the fine prediction is pasted back at the crop's offsets.
"""

from __future__ import annotations

import numpy as np

from joinedtrans.targets import decode_marginal, fill_holes, largest_component

__all__ = ["clean_mask", "roi_centre", "roi_box", "crop", "paste", "crop_size"]


def clean_mask(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, largest component, holes filled: ``(H, W)`` bool."""
    binary = np.asarray(probability) >= threshold
    return fill_holes(largest_component(binary)) if binary.any() else binary


def roi_centre(oc: np.ndarray, od: np.ndarray, fallback: tuple[float, float]) -> tuple[float, float]:
    """Mean of the marginal-argmax centres of the non-empty channels among OC and OD; ``fallback`` if both empty."""
    centres = [decode_marginal(m) for m in (oc, od) if np.asarray(m).any()]
    if not centres:
        return fallback
    return float(np.mean([c[0] for c in centres])), float(np.mean([c[1] for c in centres]))


def crop_size(roi: int, height: int, ref_height: int) -> int:
    """ROI side at original resolution: ``roi`` (``ref_height`` 0, as JOINED) or ``roi * height / ref_height``."""
    return roi if ref_height <= 0 else max(16, int(round(roi * height / ref_height)))


def roi_box(centre: tuple[float, float], size: int, width: int, height: int) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of a ``size`` x ``size`` window centred on ``centre`` (x, y), shifted inside the
    image (an image smaller than the window starts at 0 and is padded by :func:`crop`)."""
    x0 = int(round(centre[0] - size / 2))
    y0 = int(round(centre[1] - size / 2))
    x0 = min(max(x0, 0), max(width - size, 0))
    y0 = min(max(y0, 0), max(height - size, 0))
    return x0, y0


def crop(array: np.ndarray, box: tuple[int, int], size: int) -> np.ndarray:
    """``size`` x ``size`` window at ``box`` (zero padding where the image is smaller); channels last or 2-D."""
    x0, y0 = box
    out = np.zeros((size, size, *array.shape[2:]), array.dtype)
    part = array[y0:y0 + size, x0:x0 + size]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def paste(window: np.ndarray, box: tuple[int, int], shape: tuple[int, int], fill=0) -> np.ndarray:
    """Inverse of :func:`crop`: a full ``shape`` (H, W) array holding ``window`` at ``box``, ``fill`` elsewhere."""
    out = np.full((*shape, *window.shape[2:]), fill, window.dtype)
    x0, y0 = box
    h = min(window.shape[0], shape[0] - y0)
    w = min(window.shape[1], shape[1] - x0)
    out[y0:y0 + h, x0:x0 + w] = window[:h, :w]
    return out
