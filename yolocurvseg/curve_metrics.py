"""Evaluation metrics for curvilinear segmentation (the paper's exact list is not public; OURS: a superset
of the usual vessel metrics): Dice, clDice, HD95 (MONAI, through ``common.metrics``), sensitivity, specificity, and the
Betti-0 / Betti-1 errors.

Conventions:
- all metrics are computed inside the FOV when one is given (DRIVE protocol); pixels outside are set to background;
- clDice (Shit et al., CVPR 2021): ``Tprec = |S(P) & G| / |S(P)|``, ``Tsens = |S(G) & P| / |S(G)|``,
  ``clDice = 2 Tprec Tsens / (Tprec + Tsens)`` with ``S`` = ``skimage.morphology.skeletonize``; both empty -> 1,
  exactly one empty -> 0;
- Betti-0 = number of 8-connected foreground components; Betti-1 = number of holes = number of 4-connected
  background components of the zero-padded mask minus one (the outside); errors are ``|b(P) - b(G)|`` per image;
- HD95 / Dice empty-mask policy: that of ``common.metrics.binary_segmentation_metrics`` (diagonal for one empty).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from common.metrics import binary_segmentation_metrics

__all__ = ["cldice", "betti_numbers", "curve_metrics"]

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def cldice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Centerline Dice of two bool ``(H, W)`` masks (see module docstring)."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    sp, sg = skeletonize(p), skeletonize(g)
    tprec = (sp & g).sum() / max(sp.sum(), 1)
    tsens = (sg & p).sum() / max(sg.sum(), 1)
    return float(0.0 if tprec + tsens == 0 else 2 * tprec * tsens / (tprec + tsens))


def betti_numbers(mask: np.ndarray) -> tuple[int, int]:
    """``(b0, b1)`` of a bool ``(H, W)`` mask: 8-connected components and holes (4-connected background)."""
    m = np.asarray(mask, bool)
    _, b0 = ndimage.label(m, _EIGHT)
    _, n_bg = ndimage.label(~np.pad(m, 1), _FOUR)
    return int(b0), int(n_bg - 1)


def curve_metrics(pred: np.ndarray, gt: np.ndarray, fov: np.ndarray | None = None, surface: bool = True
                  ) -> dict[str, float]:
    """All metrics of one image: ``dice``, ``cldice``, ``hd95``, ``sensitivity``, ``specificity``, ``iou``,
    ``betti0_error``, ``betti1_error``. ``pred``/``gt``/``fov`` bool ``(H, W)``."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    f = np.ones_like(g) if fov is None else np.asarray(fov, bool)
    p, g = p & f, g & f
    base = binary_segmentation_metrics(p, g, surface=surface)
    tp, fn = (p & g).sum(), (~p & g & f).sum()
    tn, fp = (~p & ~g & f).sum(), (p & ~g).sum()
    bp, bg = betti_numbers(p), betti_numbers(g)
    out = {"dice": base["dice"], "cldice": cldice(p, g), "iou": base["iou"],
           "sensitivity": float(tp / max(tp + fn, 1)), "specificity": float(tn / max(tn + fp, 1)),
           "betti0_error": float(abs(bp[0] - bg[0])), "betti1_error": float(abs(bp[1] - bg[1]))}
    if surface:
        out["hd95"] = base["hd95"]
    return out
