"""Evaluate a trained YoloCurvSeg segmenter on the test split, or predict curve masks for unlabelled images.

The model and the config are rebuilt from the checkpoint (``--config`` replaces the stored config; overrides apply):

``python eval.py [--checkpoint auto|PATH] [--out DIR]``
  -> ``<run>/eval/summary.csv`` and ``per_case.csv`` (Dice, clDice, HD95, sensitivity, specificity, Betti errors,
  inside the FOV) and ``predictions.png`` (image | ground truth | prediction);
``python eval.py --checkpoint PATH --predict DIR [--out DIR]``
  -> one ``<name>_mask.png`` ({0, 255}) per image under DIR and ``predictions.csv`` (file, mask, curve fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.cli import eval_parser, parse_eval
from common.readers import list_images
from common.rundir import resolve_path
from common.runtime import dist_info, setup_runtime
from common.tracking import image_grid, overlay_mask, save_png, write_eval_tables
from yolocurvseg.data import DATASETS, read_grey
from yolocurvseg.engine import evaluate, postprocess, predict_image
from yolocurvseg.model import build_model
from yolocurvseg.pipeline import prepare_data
from yolocurvseg.settings import Config

__all__ = ["load_segmenter", "predict_files", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def load_segmenter(cfg: Config, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    model = build_model(cfg.model).to(device)
    ckpt = load_checkpoint(checkpoint, map_location=device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RuntimeError(f"{checkpoint} does not fit model {cfg.model}; drop --config so that the config stored "
                           f"in the checkpoint is used") from exc
    return model


def predict_files(model: torch.nn.Module, files: list[Path], out_dir: Path, cfg: Config, device: torch.device
                  ) -> Path:
    """Write ``<stem>_mask.png`` for each image and ``predictions.csv``; returns the CSV path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    channel = DATASETS[cfg.data.dataset].channel
    rows = []
    for f in files:
        prob = predict_image(model, read_grey(f, channel), cfg.eval.roi, device, cfg.eval.tta)
        mask = postprocess(prob > cfg.eval.threshold, None, cfg.eval.min_component)
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out_dir / f"{f.stem}_mask.png")
        rows.append({"file": str(f), "mask": str(out_dir / f"{f.stem}_mask.png"), "curve_fraction": float(mask.mean())})
    csv_path = out_dir / "predictions.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def evaluate_test_split(model: torch.nn.Module, cfg: Config, out: Path, device: torch.device) -> dict[str, float]:
    """Test-split metrics -> ``out/summary.csv``, ``out/per_case.csv`` and ``out/predictions.png``."""
    prep = prepare_data(cfg)
    rows, summary = evaluate(model, prep.test, cfg.eval, device, cfg.runtime.progress)
    write_eval_tables(out, summary, rows)
    grid = []
    for case in prep.test[:3]:
        prob = predict_image(model, case.image, cfg.eval.roi, device, fov=case.fov)
        pred = postprocess(prob > cfg.eval.threshold, case.fov, cfg.eval.min_component)
        grid.append([case.image, overlay_mask(case.image, case.label), overlay_mask(case.image, pred)])
    save_png(image_grid(grid), out / "predictions.png")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, float] | Path:
    parser = eval_parser("Evaluate or apply a YoloCurvSeg segmenter")
    request = parse_eval(Config, argv, parser, "yolocurvseg", PROJECT_DIR)
    cfg, args = request.config, request.args
    if dist_info().distributed:
        raise SystemExit("eval.py runs in one process (a test split is a few images); run it without torchrun")
    device = setup_runtime(cfg.runtime, cfg.seed)
    model = load_segmenter(cfg, request.checkpoint, device)
    run_dir = request.checkpoint.resolve().parent.parent
    if args.predict:
        out = resolve_path(args.out) if args.out else run_dir / "predict"
        path = predict_files(model, list_images([args.predict], recursive=False), out, cfg, device)
        print(f"[yolocurvseg] predictions -> {path}")
        return path
    out = resolve_path(args.out) if args.out else run_dir / "eval"
    summary = evaluate_test_split(model, cfg, out, device)
    print("[yolocurvseg] test: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()) + f" -> {out}")
    return summary


if __name__ == "__main__":
    main()
