"""Evaluate a trained YoloCurvSeg segmenter on the test split, or predict curve masks for unlabelled images.

``python eval.py --config configs/default.yaml --checkpoint runs/.../checkpoints/best.pt``
  -> ``<run>/eval/summary.csv`` and ``per_case.csv`` (Dice, clDice, HD95, sensitivity, specificity, Betti errors,
  inside the FOV);
``python eval.py --config configs/default.yaml --checkpoint best.pt --predict img1.png img_dir/ --out preds/``
  -> one ``<name>_mask.png`` ({0, 255}) per image and ``predictions.csv`` (file, curve fraction).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import build_arg_parser, parse_cli
from common.readers import list_images, read_image
from common.rundir import resolve_path
from common.runtime import pick_device
from yolocurvseg.data import DATASETS
from yolocurvseg.engine import evaluate_cases, predict_probs
from yolocurvseg.model import build_segmenter
from yolocurvseg.pipeline import prepare_data
from yolocurvseg.settings import Config

__all__ = ["load_segmenter", "predict_files", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def load_segmenter(cfg: Config, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    model = build_segmenter(cfg.model).to(device)
    ckpt = load_checkpoint(checkpoint, map_location=device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RuntimeError(f"{checkpoint} does not fit model {cfg.model}; pass the config the run used "
                           f"(<run>/config.yaml)") from exc
    return model


def predict_files(model: torch.nn.Module, files: list[Path], out_dir: Path, cfg: Config, device: torch.device
                  ) -> Path:
    """Write ``<stem>_mask.png`` for each image and ``predictions.csv``; returns the CSV path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    channel = DATASETS[cfg.data.dataset].channel
    rows = []
    for f in files:
        arr = read_image(f)
        if arr.ndim == 3:
            arr = arr[..., 1] if channel == "green" else arr[..., :3].mean(-1)
        img = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
        mask = predict_probs(model, img, cfg.eval.roi, device, cfg.eval.tta) > cfg.eval.threshold
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out_dir / f"{f.stem}_mask.png")
        rows.append({"file": str(f), "mask": str(out_dir / f"{f.stem}_mask.png"), "curve_fraction": float(mask.mean())})
    csv_path = out_dir / "predictions.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def main(argv: Sequence[str] | None = None) -> dict[str, float] | Path:
    parser = build_arg_parser("Evaluate or apply a YoloCurvSeg segmenter", training=False)
    parser.add_argument("--checkpoint", required=True, help="checkpoints/best.pt of a training run")
    parser.add_argument("--predict", nargs="+", default=None, help="images or folders to segment (no labels)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval or <run>/predictions)")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    device = pick_device(cfg.runtime.device)
    model = load_segmenter(cfg, args.checkpoint, device)
    run_dir = Path(args.checkpoint).resolve().parent.parent
    if args.predict:
        out = resolve_path(args.out) if args.out else run_dir / "predictions"
        path = predict_files(model, list_images(args.predict, recursive=False), out, cfg, device)
        print(f"[yolocurvseg] predictions -> {path}")
        return path
    prep = prepare_data(cfg)
    rows, summary = evaluate_cases(model, prep.test, cfg.eval.roi, device, cfg.eval.threshold, cfg.eval.tta,
                                   cfg.eval.surface)
    out = resolve_path(args.out) if args.out else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("per_case.csv", rows), ("summary.csv", [summary])):
        with (out / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    print("[yolocurvseg] test: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
