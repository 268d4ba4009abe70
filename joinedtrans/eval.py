"""Evaluate a trained JOINEDTrans pipeline (``checkpoints/best.pt``) on a split, or predict on unlabelled images
(JOINED ``Coarse/evaluate_seg_smp_MSE.py`` + ``Fine/faz_evalstep3.py``: Dice OD/OC, vCDR error, fovea distance in
original pixels).

    python eval.py [--checkpoint auto|PATH] [--config FILE] [--data-root DIR] [--out DIR] [eval.split=val]
    python eval.py --checkpoint PATH --predict DIR [--out DIR]    # masks (0/128/255 PNG) + fovea.csv

The model is rebuilt from the checkpoint's own config; its input statistics come from the checkpoint too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.cli import eval_parser, parse_eval
from common.readers import list_images, read_image
from common.runtime import cleanup_distributed, dist_info, setup_runtime
from common.tracking import save_png, write_eval_tables
from joinedtrans.data import Case, Loaded
from joinedtrans.figures import draw_contours
from joinedtrans.pipeline import PROJECT, infer, load_pipeline, prepare_data, score_split
from joinedtrans.settings import Config
from joinedtrans.targets import channels_to_mask

__all__ = ["PROJECT_DIR", "evaluate_split", "predict_folder", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def evaluate_split(cfg: Config, checkpoint: Path, out: Path) -> dict[str, float]:
    """Score ``cfg.eval.split``; writes ``summary.csv`` and ``per_case.csv`` under ``out``."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    pipe, mean, std = load_pipeline(cfg, checkpoint)
    pipe.to(device)
    data = prepare_data(cfg, splits=(cfg.eval.split,))
    items = data.test if cfg.eval.split == "test" else data.val
    summary, rows, _ = score_split(pipe, items, cfg, mean, std, device)
    write_eval_tables(out, summary, rows)
    if dist_info().is_main:
        print(f"[{PROJECT}] {cfg.eval.split}: " + ", ".join(f"{k} {summary[k]:.4f}" for k in
              ("dice_disc", "dice_cup", "vcdr_mae", "fovea_dist_norm", "dice_disc_hard", "fovea_dist_norm_hard")))
    cleanup_distributed()
    return summary


def predict_folder(cfg: Config, checkpoint: Path, folder: Path, out: Path) -> Path:
    """Masks and fovea points of every image under ``folder``; returns ``out/fovea.csv``."""
    import pandas as pd

    device = setup_runtime(cfg.runtime, cfg.seed)
    pipe, mean, std = load_pipeline(cfg, checkpoint)
    pipe.to(device)
    rows = []
    for path in list_images([folder]):
        image = read_image(path, mode="RGB")
        item = Loaded(Case(path.stem, path, path, None, cfg.data.dataset, "predict"), image,
                      np.full(image.shape[:2], 255, np.uint8))
        pred = infer(pipe, [item], cfg, mean, std, device)[0]
        save_png(np.stack([channels_to_mask(pred.oc, pred.od)] * 3, -1), out / "masks" / f"{path.stem}.png")
        save_png(draw_contours(image, pred.oc, pred.od, pred.fovea, (0, 255, 0), (40, 120, 255)),
                 out / "overlays" / f"{path.stem}.png")
        fx, fy = pred.fovea if pred.fovea is not None else (float("nan"), float("nan"))
        rows.append({"image": str(path), "Fovea_X": fx, "Fovea_Y": fy, "refined": pred.fovea_refined})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "fovea.csv", index=False)
    print(f"[{PROJECT}] {len(rows)} images -> {out}")
    return out / "fovea.csv"


def main(argv: Sequence[str] | None = None) -> dict[str, float] | Path:
    parser = eval_parser("Evaluate JOINEDTrans (Dice OD/OC, vCDR error, fovea distance) or predict on images")
    ea = parse_eval(Config, argv, parser, PROJECT, PROJECT_DIR)
    run_dir = ea.checkpoint.parent.parent
    if ea.args.predict:
        return predict_folder(ea.config, ea.checkpoint, Path(ea.args.predict),
                              Path(ea.args.out) if ea.args.out else run_dir / "predict")
    return evaluate_split(ea.config, ea.checkpoint, Path(ea.args.out) if ea.args.out else run_dir / "eval")


if __name__ == "__main__":
    main()
