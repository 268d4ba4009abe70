"""Stage 4 of ASLseg: "the reliable pseudo-labels are selected to expand the labeled set" (criterion OURS).

Per unlabelled slice: agreement a = Dice(refined mask m_r, SSL mask m_s) and uncertainty u = mean binary
entropy (bits) of the refined probability over dilate(m_r | m_s, ``dilation`` px). Reliable positive: a >=
``min_agreement`` and u <= ``max_uncertainty``; reliable negative: both masks empty and the SSL maximum
probability < ``neg_max_prob`` (at most ``neg_ratio`` negatives per selected positive). At most ``max_fraction``
of the remaining candidates join per round, positives ranked by a - u, negatives by their SSL maximum. With
``rule: quantile`` the positives are instead the top ``top_fraction`` of the scored candidates by a - u, whatever
their absolute values, except a = 0 (OURS: the absolute thresholds chosen on one labelled subset selected nothing
on another). Selected slices join the labelled set with m_r and are never candidates again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from aslseg.settings import SelectionConfig

__all__ = ["SliceScore", "score_slices", "select", "binary_entropy_bits"]


@dataclass
class SliceScore:
    """Per candidate: ``agreement`` (NaN when both masks are empty), ``uncertainty`` (bits), ``ssl_max``, and
    whether the refined mask is empty."""

    agreement: np.ndarray
    uncertainty: np.ndarray
    ssl_max: np.ndarray
    empty: np.ndarray


def binary_entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def score_slices(refined: np.ndarray, ssl: np.ndarray, threshold: float = 0.5, dilation: int = 3,
                 uncertainty_probs: np.ndarray | None = None) -> SliceScore:
    """Scores of ``(N, H, W)`` refined and SSL probabilities; the entropy is taken of ``uncertainty_probs`` when
    given (for binary refined labels, e.g. the probability they were fused from), else of ``refined``."""
    probs = refined if uncertainty_probs is None else uncertainty_probs
    m_r, m_s = refined > threshold, ssl > threshold
    n = len(refined)
    agreement, uncertainty = np.full(n, np.nan), np.zeros(n)
    for i in range(n):
        union = m_r[i] | m_s[i]
        if not union.any():
            continue
        agreement[i] = 2 * (m_r[i] & m_s[i]).sum() / (m_r[i].sum() + m_s[i].sum())
        region = ndimage.binary_dilation(union, iterations=dilation) if dilation else union
        uncertainty[i] = binary_entropy_bits(probs[i][region]).mean()
    return SliceScore(agreement, uncertainty, ssl.reshape(n, -1).max(1), ~m_r.reshape(n, -1).any(1))


def select(score: SliceScore, candidates: np.ndarray, cfg: SelectionConfig, rng: np.random.Generator
           ) -> np.ndarray:
    """Indices (into the score arrays) chosen among ``candidates`` this round, per ``cfg.mode``."""
    candidates = np.asarray(candidates, np.int64)
    budget = int(np.floor(cfg.max_fraction * len(candidates)))
    if cfg.mode == "all":
        return candidates
    a, u = score.agreement[candidates], score.uncertainty[candidates]
    if cfg.rule == "quantile":  # relative to this round: the top fraction of the scored candidates by a - u
        scored = np.isfinite(a)
        rank = np.where(scored, a - u, -np.inf)
        n_top = int(np.floor(cfg.top_fraction * scored.sum()))
        pos_ok = np.zeros(len(candidates), bool)
        pos_ok[np.argsort(-rank, kind="stable")[:n_top]] = True
        # no overlap at all between the two masks is never reliable, however the round ranks it (a round whose
        # candidates mostly disagree would otherwise fill its quota with them)
        pos_ok &= scored & (np.nan_to_num(a, nan=0.0) > 0)
    else:
        pos_ok = np.isfinite(a) & (a >= cfg.min_agreement) & (u <= cfg.max_uncertainty)
    neg_ok = ~np.isfinite(a) & (score.ssl_max[candidates] < cfg.neg_max_prob)
    positives = candidates[pos_ok][np.argsort(-(a[pos_ok] - u[pos_ok]), kind="stable")]
    n_pos = min(len(positives), budget)
    negatives = candidates[neg_ok][np.argsort(score.ssl_max[candidates][neg_ok], kind="stable")]
    n_neg = min(len(negatives), int(np.floor(cfg.neg_ratio * n_pos)), budget - n_pos)
    chosen = np.concatenate([positives[:n_pos], negatives[:n_neg]]).astype(np.int64)
    if cfg.mode == "random":
        return np.sort(rng.choice(candidates, size=len(chosen), replace=False)).astype(np.int64)
    return chosen
