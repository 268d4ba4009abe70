"""Smoke test on a real photograph: ``skimage.data.retina()`` (a fundus image shipped inside the scikit-image
wheel, public domain). No ground truth, so no metric: the predicted disc/cup contours and fovea are drawn and
written with their sizes, and plausibility notes are printed (one disc component; disc-fovea distance of
1.5-3.5 disc diameters, fovea temporal to the disc and inside the field of view). The synthetic generator is never tuned on this image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from common.config import load_from_checkpoint
from common.tracking import save_png
from joinedtrans.data import Case, Loaded
from joinedtrans.figures import draw_contours
from joinedtrans.pipeline import infer, load_pipeline
from joinedtrans.settings import Config
from joinedtrans.targets import field_of_view, vertical_extent

__all__ = ["plausibility", "retina_smoke"]


def plausibility(image: np.ndarray, disc_xy: tuple[float, float], disc_diameter: float,
                 fovea_xy: tuple[float, float]) -> dict:
    """Anatomical plausibility of a disc/fovea pair on a fundus photograph (no ground truth): the disc-fovea
    distance in disc diameters (1.5-3.5 expected), whether the fovea lies on the side of the disc that faces the
    centre of the image (temporal) and inside the field of view (``targets.field_of_view``, threshold 20)."""
    dd = math.dist(disc_xy, fovea_xy) / disc_diameter
    temporal = bool((fovea_xy[0] - disc_xy[0]) * (image.shape[1] / 2 - disc_xy[0]) > 0)
    x, y = (min(max(int(round(v)), 0), n - 1) for v, n in zip(fovea_xy, image.shape[1::-1]))
    inside = bool(field_of_view(image, 20)[y, x])
    return {"disc_fovea_dd": dd, "fovea_temporal": temporal, "fovea_in_fov": inside,
            "plausible": bool(1.5 <= dd <= 3.5 and temporal and inside)}


def retina_smoke(checkpoint: Path, folder: Path) -> dict:
    """Writes ``retina_smoke.png`` and ``retina_smoke.json`` (pixels of the full 1411 x 1411 image, x right,
    y down) into ``folder``; returns the JSON content."""
    import torch
    from skimage import data as skdata

    image = skdata.retina()[..., :3].astype(np.uint8)
    cfg = load_from_checkpoint(Config, checkpoint)
    pipe, mean, std = load_pipeline(cfg, checkpoint)
    item = Loaded(Case("retina", Path("retina"), Path("retina"), None, "refuge", "smoke"), image,
                  np.full(image.shape[:2], 255, np.uint8))
    pred = infer(pipe, [item], cfg, mean, std, torch.device("cpu"))[0]
    rows, cols = np.nonzero(pred.od)
    info: dict = {"image_size": [int(image.shape[1]), int(image.shape[0])],
                  "disc_components_coarse": int(ndimage.label(pred.coarse.od)[1])}
    if rows.size:
        info |= {"disc_x": float((cols.min() + cols.max()) / 2), "disc_y": float((rows.min() + rows.max()) / 2),
                 "disc_diameter": float(vertical_extent(pred.od)), "cup_diameter": float(vertical_extent(pred.oc))}
    if pred.fovea is not None:
        info |= {"fovea_x": float(pred.fovea[0]), "fovea_y": float(pred.fovea[1])}
    if rows.size and pred.fovea is not None and info["disc_diameter"] > 0:
        info |= plausibility(image, (info["disc_x"], info["disc_y"]), info["disc_diameter"], pred.fovea)
        print(f"retina smoke: disc-fovea distance {info['disc_fovea_dd']:.2f} DD (expected 1.5-3.5), fovea temporal to "
              f"the disc: {info['fovea_temporal']}, inside the field of view: {info['fovea_in_fov']} -> "
              f"{'plausible' if info['plausible'] else 'implausible'}; coarse disc components: "
              f"{info['disc_components_coarse']}")
    folder.mkdir(parents=True, exist_ok=True)
    save_png(draw_contours(image, pred.oc, pred.od, pred.fovea, (0, 255, 0), (40, 120, 255), thickness=4),
             folder / "retina_smoke.png")
    (folder / "retina_smoke.json").write_text(json.dumps(info, indent=2))
    return info
