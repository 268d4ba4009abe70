"""Metrics of JOINED's evaluation (``Coarse/evaluate_seg_smp_MSE.py``, ``Fine/faz_evalstep3.py``), at original
image size:

- Dice of the disc (solid OD, labels rim + cup) and of the cup, via ``common.metrics.segmentation_metrics``;
- vCDR error: |vCDR(pred) - vCDR(truth)| per image, vCDR from the row extents of the binary masks (not for PALM,
  which has no cup);
- fovea distance: Euclidean distance in original pixels between decoded and true fovea; ``fovea_dist_norm`` divides
  it by the image diagonal. Images whose fovea is not visible are excluded and counted (``fovea_missing_gt``).
- ``_hard`` columns: disc metrics over images whose disc is hidden (``disc_low_quality``, ``disc_degraded``), fovea
  metrics over images whose fovea is hidden (``fovea_occluded``, ``fovea_low_quality``).
- ``score`` (model selection on validation): mean(disc Dice, cup Dice, 1 - min(1, 10 * fovea_dist_norm)).
"""

from __future__ import annotations

import math

import numpy as np

from common.metrics import segmentation_metrics
from joinedtrans.data import Loaded
from joinedtrans.targets import channels_to_mask, label_map, mask_to_channels, vcdr

__all__ = ["case_metrics", "summarise", "selection_score", "DISC_HARD", "FOVEA_HARD"]

DISC_HARD = ("disc_low_quality", "disc_degraded")
FOVEA_HARD = ("fovea_occluded", "fovea_low_quality")


def case_metrics(item: Loaded, oc: np.ndarray, od: np.ndarray, fovea: tuple[float, float] | None
                 ) -> dict[str, float | str]:
    """Per-image metrics of predicted binary ``oc``/``od`` (H, W) and fovea (x, y) (None = not predicted)."""
    h, w = item.mask.shape
    pred = channels_to_mask(oc, od)
    seg = segmentation_metrics(label_map(pred), label_map(item.mask if not item.palm else
                                                          np.where(item.mask == 0, 128, 255)),
                               {"disc": [1, 2], "cup": 2}, surface=False)
    gt_oc, gt_od, _ = mask_to_channels(item.mask, palm=item.palm).astype(bool)
    row: dict[str, float | str] = {"case": item.case.case_id, "hard": item.case.hard,
                                   "dice_disc": seg["dice_disc"],
                                   "dice_cup": float("nan") if item.palm else seg["dice_cup"],
                                   "vcdr_err": float("nan") if item.palm else abs(vcdr(oc, od) - vcdr(gt_oc, gt_od))}
    truth = item.case.fovea
    if truth is None or fovea is None:
        row["fovea_dist_px"] = float("nan")
    else:
        row["fovea_dist_px"] = math.dist(truth, fovea)
    row["fovea_dist_norm"] = row["fovea_dist_px"] / math.hypot(w, h)
    row["fovea_visible"] = float(truth is not None)
    return row


def _mean(rows: list[dict], key: str, kinds: tuple[str, ...] | None = None) -> float:
    vals = [float(r[key]) for r in rows if kinds is None or r["hard"] in kinds]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def selection_score(dice_disc: float, dice_cup: float, fovea_dist_norm: float) -> float:
    """mean(OD Dice, OC Dice, 1 - min(1, 10 * fovea_dist_norm)); missing terms are left out."""
    terms = [dice_disc, dice_cup, 1.0 - min(1.0, 10.0 * fovea_dist_norm) if not math.isnan(fovea_dist_norm)
             else float("nan")]
    terms = [t for t in terms if not math.isnan(t)]
    return float(np.mean(terms)) if terms else 0.0


def summarise(rows: list[dict]) -> dict[str, float]:
    """Means over images (NaN terms left out), the ``_hard`` subsets and counts."""
    out = {k: _mean(rows, k) for k in ("dice_disc", "dice_cup", "vcdr_err", "fovea_dist_norm", "fovea_dist_px")}
    out["vcdr_mae"] = out.pop("vcdr_err")
    out["dice_disc_hard"] = _mean(rows, "dice_disc", DISC_HARD)
    out["fovea_dist_norm_hard"] = _mean(rows, "fovea_dist_norm", FOVEA_HARD)
    out["fovea_dist_px_hard"] = _mean(rows, "fovea_dist_px", FOVEA_HARD)
    out["n_images"] = float(len(rows))
    out["fovea_missing_gt"] = float(sum(1 for r in rows if not r["fovea_visible"]))
    out["score"] = selection_score(out["dice_disc"], out["dice_cup"], out["fovea_dist_norm"])
    return out
