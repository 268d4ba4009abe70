"""Thresholds, test-time clustering + naming (no labels, seeded), and the metric wrappers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

from octa_iqa.assessment import quality_metrics
from octa_iqa.cluster import cluster_non_outstanding, name_clusters, score_block
from octa_iqa.settings import ClusterConfig
from octa_iqa.thresholds import gmm_threshold, otsu_threshold, quantile_threshold, second_threshold


def _blobs(n0: int, n1: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([rng.normal(0, 1, (n0, 12)), rng.normal(6, 1, (n1, 12))])
    scores = np.concatenate([rng.normal(1, 0.1, n0), rng.normal(3, 0.1, n1)])
    feats = np.stack([scores, scores * 0.5, scores * 1.2], axis=1)
    truth = np.array([1] * n0 + [0] * n1)  # the high-score blob is ungradable
    return pooled, feats, truth


@pytest.mark.parametrize("method,reduce", [("kmeans", "pca"), ("gmm", "pca"),
                                           pytest.param("kmeans", "tsne", marks=pytest.mark.slow)])
def test_two_blobs_perfect_and_named_by_score(method, reduce):
    pooled, feats, truth = _blobs(40, 30)
    cfg = ClusterConfig(method=method, reduce=reduce, n_components=4)
    res = cluster_non_outstanding(pooled, feats, cfg)
    assert adjusted_rand_score(truth, res.assignment) == 1.0
    assert np.array_equal(res.labels, truth)
    assert not res.fallback and res.embedding.shape == (70, 2)


def test_deterministic_by_seed_and_label_free():
    pooled, feats, _ = _blobs(25, 25, seed=1)
    pooled = pooled + np.random.default_rng(9).normal(0, 3, pooled.shape)  # overlapping: seed matters
    a = cluster_non_outstanding(pooled, feats, ClusterConfig(seed=3))
    b = cluster_non_outstanding(pooled.copy(), feats.copy(), ClusterConfig(seed=3))
    assert np.array_equal(a.assignment, b.assignment) and np.array_equal(a.labels, b.labels)


def test_score_block_log_excess_and_terms():
    feats = np.array([[2.0, 1.0, 5.0], [4.0, 1.5, 6.0], [9.0, 3.0, 7.0]])
    got = score_block(feats, ClusterConfig(), tau=1.0)
    assert np.allclose(got[:, 0], np.log1p([1.0, 3.0, 8.0])) and got.shape == (3, 1)
    assert np.allclose(score_block(feats, ClusterConfig())[:, 0], np.log1p([0.0, 2.0, 7.0]))  # tau None: min s
    assert np.array_equal(score_block(feats, ClusterConfig(score_block="terms")), feats)


def test_log_excess_splits_a_heavy_tailed_score():
    """A compact gradable group just above tau and a wide, heavy-tailed ungradable group: on the log of the
    exceedance the two are two Gaussians, which the default descriptor (score block weighted 2) separates."""
    rng = np.random.default_rng(0)
    s = np.concatenate([1.0 + rng.gamma(2.0, 0.5, 40), 1.0 + np.exp(rng.normal(2.5, 0.6, 40))])
    pooled = rng.normal(0, 1, (80, 16))
    truth = np.array([1] * 40 + [0] * 40)
    res = cluster_non_outstanding(pooled, np.stack([s, s, s, s], axis=1), ClusterConfig(), tau=1.0)
    assert (res.labels == truth).mean() >= 0.9


def test_naming_rule():
    assignment = np.array([0, 0, 1, 1])
    assert name_clusters(assignment, np.array([5.0, 6.0, 1.0, 2.0])).tolist() == [0, 0, 1, 1]
    assert name_clusters(assignment, np.array([1.0, 2.0, 5.0, 6.0])).tolist() == [1, 1, 0, 0]


def test_small_cluster_guard_falls_back_to_score_gmm():
    rng = np.random.default_rng(0)
    pooled = np.concatenate([rng.normal(0, 1, (99, 6)), np.full((1, 6), 50.0)])  # one outlier: 1 % cluster
    scores = np.concatenate([rng.normal(1, 0.05, 50), rng.normal(2, 0.05, 49), [1.5]])
    cfg = ClusterConfig(n_components=3, score_weight=0.0, method="kmeans")  # pooled only: the outlier is a cluster
    res = cluster_non_outstanding(pooled, np.stack([scores] * 3, axis=1), cfg)
    assert res.fallback
    assert np.bincount(res.labels).min() >= 40


def test_quantile_threshold_exact_fraction():
    scores = np.random.default_rng(0).permutation(np.arange(40, dtype=float))
    for n in (20, 40, 37):
        tau = quantile_threshold(scores[:n], 0.95)
        assert (scores[:n] > tau).sum() == int(np.ceil(0.05 * n))


def test_otsu_and_gmm_thresholds_reproducible():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(0, 1, 200), rng.normal(8, 1, 200)])
    t = otsu_threshold(s)
    assert 2 < t < 6 and t == otsu_threshold(s)
    g = gmm_threshold(s, 2, seed=0)
    assert 2 < g[0] < 6 and g == gmm_threshold(s, 2, seed=0)
    s3 = np.concatenate([s, rng.normal(16, 1, 200)])
    assert 10 < second_threshold(s3, "gmm3", seed=0) < 14


def test_metrics_match_hand_computation():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    m = quality_metrics(y, p, score=np.array([9, 8, 5, 6, 1, 2, 3, 7.0]))
    assert m["confusion_matrix"].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 3 / 4) / 3)
    f1 = [2 / 4, 2 * 2 / (2 * 2 + 1), 2 * 3 / (2 * 3 + 1)]  # 2TP / (2TP + FP + FN)
    assert m["f1_macro"] == pytest.approx(np.mean(f1))
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))
    assert m["auroc"] == pytest.approx(14 / 16)  # the outstanding score 7 beats the gradable 5 and 6
    assert m["auroc_ungradable_vs_gradable"] == 1.0
    with pytest.raises(ValueError, match="labels must be 0/1/2"):
        quality_metrics(y, p + 1)
