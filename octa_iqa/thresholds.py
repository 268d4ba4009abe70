"""Outstanding vs non-outstanding thresholds (our design; the paper's rule is not available).

- ``quantile`` (default): tau = the 95th percentile of s(x) over held-out outstanding training images (no label of
  any other class is used);
- ``otsu``: Otsu's threshold on the unlabeled test scores (scikit-image);
- ``gmm2``: a 2-component 1-D Gaussian mixture on the test scores, decision where the posteriors cross.

:func:`split_scores` adds the second threshold of the two-threshold baselines (Otsu or a 3-component GMM).
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantile_threshold", "otsu_threshold", "gmm_threshold", "outstanding_threshold", "second_threshold"]


def quantile_threshold(holdout_scores: np.ndarray, quantile: float = 0.95) -> float:
    """tau such that exactly ``ceil((1 - quantile) * n)`` of the ``n`` held-out normal scores lie above it (when
    the scores are distinct): tau is the ``(n - k)``-th smallest score, the empirical ``quantile``."""
    scores = np.sort(np.asarray(holdout_scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("quantile threshold needs held-out outstanding scores; none were given")
    above = min(int(np.ceil((1.0 - quantile) * scores.size - 1e-9)), scores.size - 1)
    return float(scores[scores.size - above - 1])


def otsu_threshold(scores: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    scores = np.asarray(scores, dtype=np.float64)
    if np.ptp(scores) == 0:
        return float(scores[0])
    return float(threshold_otsu(scores, nbins=256))


def gmm_threshold(scores: np.ndarray, components: int = 2, seed: int = 0) -> list[float]:
    """Decision points between consecutive components (sorted by mean) of a seeded 1-D GMM: posterior crossings
    found on a fine grid between the component means."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(components, random_state=seed, n_init=3).fit(x)
    order = np.argsort(gmm.means_[:, 0])
    grid = np.linspace(x.min(), x.max(), 4096).reshape(-1, 1)
    post = gmm.predict_proba(grid)[:, order]
    cuts = []
    for a in range(components - 1):
        lo, hi = gmm.means_[order[a], 0], gmm.means_[order[a + 1], 0]
        inside = (grid[:, 0] >= lo) & (grid[:, 0] <= hi)
        if not inside.any():
            cuts.append(float((lo + hi) / 2))
            continue
        diff = post[inside, a] - post[inside, a + 1]
        cross = np.nonzero(diff <= 0)[0]
        cuts.append(float(grid[inside][cross[0], 0] if cross.size else (lo + hi) / 2))
    return cuts


def outstanding_threshold(rule: str, holdout_scores: np.ndarray, test_scores: np.ndarray, quantile: float = 0.95,
                          seed: int = 0) -> float:
    if rule == "quantile":
        return quantile_threshold(holdout_scores, quantile)
    if rule == "otsu":
        return otsu_threshold(test_scores)
    if rule == "gmm2":
        return gmm_threshold(test_scores, 2, seed)[0]
    raise ValueError(f"threshold.rule must be quantile, otsu or gmm2, got {rule!r}")


def second_threshold(scores: np.ndarray, rule: str = "otsu", seed: int = 0) -> float:
    """Gradable/ungradable cut among non-outstanding scores: Otsu, or the upper cut of a 3-component GMM over
    ``scores`` (pass all test scores for ``gmm3``, the non-outstanding ones for ``otsu``)."""
    if len(scores) < 2:
        return float(np.max(scores)) if len(scores) else float("inf")
    if rule == "otsu":
        return otsu_threshold(scores)
    if rule == "gmm3":
        return gmm_threshold(scores, 3, seed)[1]
    raise ValueError(f"baselines.second_split must be otsu or gmm3, got {rule!r}")
