"""Global image statistics of an en-face image (ours; not in the paper).

Used twice: by the ``handcrafted_logreg`` supervised reference row (statistics + logistic regression) and by the
synthetic generator's calibration, where the "anomaly magnitude" of an artefact is the standardised distance of the
degraded image's statistics from those of outstanding images (:func:`anomaly_magnitude`).

Per scale (the image block-averaged by 1, 2 and 4): mean, std, 10th and 90th intensity percentiles, mean absolute
horizontal and vertical gradients, Laplacian variance, the largest jump between consecutive row means and between
consecutive column means, and the spread of 8 x 8 block means (uneven illumination).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["STAT_NAMES", "global_statistics", "statistics_matrix", "anomaly_magnitude"]

STAT_NAMES = ("mean", "std", "p10", "p90", "grad_x", "grad_y", "laplacian_var", "row_jump", "col_jump", "block_std")
SCALES = (1, 2, 4)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _one_scale(x: np.ndarray) -> list[float]:
    p10, p90 = np.percentile(x, [10, 90])
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    blocks = _block_mean(x, max(1, x.shape[0] // 8))
    return [float(x.mean()), float(x.std()), float(p10), float(p90), float(np.abs(np.diff(x, axis=1)).mean()),
            float(np.abs(np.diff(x, axis=0)).mean()), float(ndimage.laplace(x).var()),
            float(np.abs(np.diff(rows)).max()), float(np.abs(np.diff(cols)).max()), float(blocks.std())]


def global_statistics(image: np.ndarray) -> np.ndarray:
    """(H, W) float image in [0, 1] -> (len(SCALES) * len(STAT_NAMES),) float64 statistics."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"global_statistics expects a (H, W) grey image, got shape {image.shape}")
    return np.array([v for f in SCALES for v in _one_scale(_block_mean(image, f))], dtype=np.float64)


def statistics_matrix(images: Sequence[np.ndarray]) -> np.ndarray:
    """N images -> (N, F) statistics."""
    return np.stack([global_statistics(img) for img in images])


def anomaly_magnitude(degraded: Sequence[np.ndarray], reference: np.ndarray) -> np.ndarray:
    """Root-mean-square standardised deviation (N,) of each degraded image's statistics from ``reference`` (M, F),
    the statistics of outstanding images: 0 for a typical outstanding image, larger for stronger artefacts."""
    mu, sd = reference.mean(0), reference.std(0) + 1e-9
    z = (statistics_matrix(degraded) - mu) / sd
    return np.sqrt((z**2).mean(axis=1))
