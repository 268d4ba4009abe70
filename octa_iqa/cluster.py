"""Test-time clustering of the non-outstanding images into gradable / ungradable (UNO-QA abstract).

Descriptor per image, over the images being clustered: the global-average-pooled adapted scales (L x D),
standardised and reduced by PCA to a few unwhitened components (``n_components``), scaled to unit total variance;
next to it the score block, standardised and scaled to a total standard deviation of ``score_weight`` (so
``score_weight`` is the weight of the scores relative to the pooled features). Score block (``score_block``, ours):
``log_excess`` (default) = log(1 + s(x) - tau), the exceedance of the stage-1 threshold in held-out spreads on a log
scale (the scores of non-outstanding images are heavy-tailed: ungradable images spread over a wide range, and a
Gaussian component on the raw score is pulled by that tail); ``terms`` = [s(x), top-1 % patch term, image term, mean
patch distance] as they are. t-SNE / UMAP options embed the whole descriptor in 2-D. Clustered into 2 groups by
k-means or a GMM.
The cluster with the higher mean s(x) is named ungradable: the rule uses scores only, never labels. If a cluster
holds fewer than ``min_fraction`` of the images, a 2-component GMM on s(x) replaces it (degenerate-cluster guard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from octa_iqa.settings import ClusterConfig

__all__ = ["ClusterResult", "score_block", "build_descriptor", "reduce_features", "cluster_two", "name_clusters",
           "cluster_non_outstanding"]

UNGRADABLE, GRADABLE = 0, 1


@dataclass
class ClusterResult:
    """``labels`` (N,) in {0 ungradable, 1 gradable}; ``assignment`` (N,) raw cluster ids; ``embedding`` (N, 2) for
    plots (first two reduced components); ``fallback`` True when the small-cluster guard fired."""

    labels: np.ndarray
    assignment: np.ndarray
    embedding: np.ndarray
    fallback: bool


def _unit_block(x: np.ndarray) -> np.ndarray:
    """Columns standardised, then the block scaled to unit total variance."""
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(x)
    total = float(np.sqrt((z**2).sum(axis=1).mean()))
    return z / total if total > 0 else z


def score_block(score_feats: np.ndarray, cfg: ClusterConfig, tau: float | None = None) -> np.ndarray:
    """(N, S) score features (column 0 = s(x)) -> the (N, F) score columns of the descriptor (``cfg.score_block``).
    ``tau``: the stage-1 threshold; ``None`` uses the smallest s(x) of the clustered images."""
    score_feats = np.asarray(score_feats, np.float64)
    if cfg.score_block == "terms":
        return score_feats
    s = score_feats[:, 0]
    base = float(np.min(s)) if tau is None else float(tau)
    return np.log1p(np.maximum(s - base, 0.0))[:, None]


def build_descriptor(pooled: np.ndarray, score_feats: np.ndarray, cfg: ClusterConfig, tau: float | None = None
                     ) -> np.ndarray:
    """(N, L*D) pooled adapted features + (N, S) score features -> (N, F) descriptor (see the module docstring)."""
    pooled = np.asarray(pooled, np.float64)
    scores = score_block(score_feats, cfg, tau)
    if len(pooled) < 2:
        return np.zeros((len(pooled), cfg.n_components + scores.shape[1]))
    block = _unit_block(pooled)
    if cfg.reduce == "pca" and cfg.n_components > 0:
        from sklearn.decomposition import PCA

        k = max(1, min(cfg.n_components, len(pooled) - 1, pooled.shape[1]))
        block = _unit_block(PCA(k, whiten=cfg.whiten, random_state=cfg.seed).fit_transform(block))
    elif cfg.n_components == 0:
        block = np.zeros((len(pooled), 0))
    return np.concatenate([block, cfg.score_weight * _unit_block(scores)], axis=1)


def reduce_features(x: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """The descriptor as it is (``pca``: the reduction is inside :func:`build_descriptor`; ``none``), or its 2-D
    t-SNE / UMAP embedding."""
    n = len(x)
    if cfg.reduce in ("pca", "none") or n < 3:
        return x
    if cfg.reduce == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=cfg.seed).fit_transform(x)
    try:
        import umap
    except ImportError as exc:
        raise ImportError("cluster.reduce=umap needs the package umap-learn (pip install umap-learn); "
                          "or use cluster.reduce=pca|tsne") from exc
    return umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, random_state=cfg.seed).fit_transform(x)


def cluster_two(z: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """(N, F) -> cluster ids (N,) in {0, 1} by seeded k-means (k = 2) or a 2-component full-covariance GMM."""
    if cfg.method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(2, n_init=cfg.n_init, random_state=cfg.seed).fit_predict(z)
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(2, covariance_type="full", n_init=cfg.n_init, random_state=cfg.seed,
                           reg_covar=1e-4).fit_predict(z)


def name_clusters(assignment: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Cluster ids -> {0 ungradable, 1 gradable}: the cluster with the larger mean score is ungradable."""
    ids = np.unique(assignment)
    means = {c: float(np.mean(scores[assignment == c])) for c in ids}
    worst = max(means, key=means.get)
    return np.where(assignment == worst, UNGRADABLE, GRADABLE).astype(np.int64)


def _gmm_on_scores(scores: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(2, random_state=seed, n_init=3).fit_predict(np.asarray(scores).reshape(-1, 1))


def cluster_non_outstanding(pooled: np.ndarray, score_feats: np.ndarray, cfg: ClusterConfig,
                            tau: float | None = None, progress: bool = False) -> ClusterResult:
    """The whole stage: descriptor -> reduction -> 2 clusters -> names, with the small-cluster guard.
    ``score_feats[:, 0]`` must be s(x); ``tau`` the stage-1 threshold (:func:`score_block`); ``progress``: a tqdm
    bar over the three steps (t-SNE / UMAP are the slow ones)."""
    n = len(pooled)
    scores = score_feats[:, 0]
    if n == 0:
        return ClusterResult(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), False)
    if n < 4:  # too few to cluster: all gradable unless clearly separated; use the score split
        assignment = (scores > np.median(scores)).astype(np.int64)
        return ClusterResult(name_clusters(assignment, scores), assignment, np.zeros((n, 2)), True)
    with tqdm(total=3, desc="clustering", leave=False, disable=not progress) as bar:
        bar.set_postfix_str("descriptor")
        z = build_descriptor(pooled, score_feats, cfg, tau)
        bar.update()
        bar.set_postfix_str(cfg.reduce)
        z = reduce_features(z, cfg)
        bar.update()
        bar.set_postfix_str(cfg.method)
        assignment = cluster_two(z, cfg)
        bar.update()
    fallback = False
    if np.bincount(assignment, minlength=2).min() < cfg.min_fraction * n:
        assignment = _gmm_on_scores(scores, cfg.seed)
        fallback = True
    emb = z[:, :2] if z.shape[1] >= 2 else np.concatenate([z, np.zeros((n, 2 - z.shape[1]))], axis=1)
    return ClusterResult(name_clusters(assignment, scores), assignment, emb, fallback)
