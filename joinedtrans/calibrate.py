"""Calibration of the fovea claims on a dataset: how far the ground-truth disc alone locates the fovea. A rule
fitted on the training split (fovea = disc centre + a mean offset in disc diameters, temporal = away from the FOV
side the disc lies on) is scored on validation and test next to the mean-position guess, overall and on the
fovea-hidden images. No network: an upper bound of what a model that finds the disc (the vessels' convergence)
could do for the fovea, and a check that the data tie the fovea to the disc at all.

    python calibrate.py [--config configs/default.yaml] [key=value ...]

Reads the dataset as it is (the synthetic set is written by ``synth.py`` or on the first training run).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.config import load_config
from joinedtrans.data import list_cases, load_cases
from joinedtrans.scoring import FOVEA_HARD
from joinedtrans.settings import Config

__all__ = ["disc_geometry", "disc_rule", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def disc_geometry(cfg: Config, split: str) -> list[dict]:
    """Per image with a visible fovea: GT disc centre (cx, cy), vertical disc diameter dd, side (+1 = disc in the
    left half, fovea to its right), fovea (fx, fy), image size and hard-case kind."""
    rows = []
    for item in load_cases(list_cases(cfg.data, split)):
        if item.case.fovea is None:
            continue
        h, w = item.mask.shape
        ys, xs = np.nonzero(item.mask <= 128)
        if xs.size == 0:
            continue
        cx, cy = float(xs.mean()), float(ys.mean())
        rows.append({"cx": cx, "cy": cy, "dd": float(ys.max() - ys.min() + 1), "side": 1.0 if cx < w / 2 else -1.0,
                     "fx": item.case.fovea[0], "fy": item.case.fovea[1], "w": w, "h": h, "hard": item.case.hard})
    return rows


def disc_rule(train: list[dict], rows: list[dict]) -> dict[str, float]:
    """Offsets fitted on ``train``; fovea distance / diagonal of the rule and of the mean-position guess on
    ``rows`` (all images and the fovea-hidden ones)."""
    ox = float(np.mean([(r["fx"] - r["cx"]) * r["side"] / r["dd"] for r in train]))
    oy = float(np.mean([(r["fy"] - r["cy"]) / r["dd"] for r in train]))
    mx = float(np.mean([r["fx"] / r["w"] for r in train]))
    my = float(np.mean([r["fy"] / r["h"] for r in train]))
    diag = [math.hypot(r["w"], r["h"]) for r in rows]
    rule = np.array([math.hypot(r["cx"] + r["side"] * ox * r["dd"] - r["fx"], r["cy"] + oy * r["dd"] - r["fy"]) / d
                     for r, d in zip(rows, diag)])
    mean = np.array([math.hypot(mx * r["w"] - r["fx"], my * r["h"] - r["fy"]) / d for r, d in zip(rows, diag)])
    hard = np.array([r["hard"] in FOVEA_HARD for r in rows], bool)

    def _m(a: np.ndarray) -> float:
        return float(a.mean()) if a.size else float("nan")

    return {"offset_temporal_dd": ox, "offset_down_dd": oy, "n": len(rows), "n_hard": int(hard.sum()),
            "disc_rule": _m(rule), "disc_rule_hard": _m(rule[hard]), "mean_position": _m(mean),
            "mean_position_hard": _m(mean[hard])}


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description="Fovea from the ground-truth disc: an upper bound of the disc prior")
    parser.add_argument("--config", default=str(PROJECT_DIR / "configs" / "default.yaml"))
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = load_config(Config, args.config, args.overrides)
    train = disc_geometry(cfg, "train")
    out = {split: disc_rule(train, disc_geometry(cfg, split)) for split in ("val", "test")}
    for split, r in out.items():
        print(f"{split}: {r['n']} images ({r['n_hard']} fovea-hidden); fovea/diagonal: disc rule {r['disc_rule']:.3f} "
              f"(hidden {r['disc_rule_hard']:.3f}), mean position {r['mean_position']:.3f} "
              f"(hidden {r['mean_position_hard']:.3f}); offset {r['offset_temporal_dd']:.2f} DD temporal, "
              f"{r['offset_down_dd']:.2f} DD down")
    return out


if __name__ == "__main__":
    main()
