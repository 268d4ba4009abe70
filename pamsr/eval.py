"""Evaluate a trained PAMSR model (official test protocol, spec section 4) or predict on unlabeled LR images.

Metrics per held-out image: PSNR/SSIM on the padded polar image (official), PSNR/SSIM after scan conversion to
Cartesian, and PSNR/SSIM on displaced LR inputs. Writes ``eval/summary.csv`` and ``eval/per_case.csv`` in the
checkpoint's run folder (or a new ``runs/pamsr/<experiment>_eval/<timestamp>/``).

    python eval.py --config configs/default.yaml --checkpoint runs/pamsr/default/<ts>/checkpoints/best.pt
    python eval.py --config configs/default.yaml model.name=bicubic          # the bicubic baseline
    python eval.py --config configs/default.yaml --checkpoint best.pt --predict /path/to/lr_pngs --out /tmp/sr
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from common.checkpoint import CheckpointError, load_checkpoint
from common.config import ConfigError, build_arg_parser, from_dict, parse_cli
from common.rundir import create_run_dir, latest_run, resolve_path
from common.runtime import pick_device
from common.seed import seed_everything
from pamsr.data import list_flat, load_images, prepare_data, read_polar
from pamsr.degradation import minmax
from pamsr.engine import evaluate, predict_image
from pamsr.inference import default_overlap
from pamsr.models import build_model
from pamsr.settings import Config, ModelConfig

__all__ = ["PROJECT_DIR", "load_model", "test_overlap", "run_eval", "predict_folder", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
METRICS = ("psnr", "ssim", "psnr_cart", "ssim_cart", "psnr_displaced", "ssim_displaced")


def test_overlap(cfg: Config) -> int:
    """``eval.tile_overlap`` or the official test-mode default ``64 - 32 // s``."""
    if cfg.eval.tile_overlap is not None:
        return cfg.eval.tile_overlap
    return default_overlap(cfg.data.scale, cfg.eval.tile)


def load_model(cfg: Config, checkpoint: str | Path | None, device: torch.device) -> torch.nn.Module:
    """Model from ``checkpoint`` (architecture taken from the checkpoint's config) or parameter-free bicubic."""
    if checkpoint is None:
        if cfg.model.name != "bicubic":
            raise CheckpointError(f"model.name={cfg.model.name} needs --checkpoint (a best.pt or last.pt of train.py)")
        return build_model(cfg.model, cfg.data.scale).to(device).eval()
    ckpt = load_checkpoint(checkpoint)
    model_cfg = cfg.model
    saved = ckpt.get("config", {}).get("model")
    if saved is not None:
        try:
            model_cfg = from_dict(ModelConfig, saved)
        except ConfigError as exc:
            raise CheckpointError(f"{checkpoint}: its model config is not readable ({exc})") from exc
    scale = int(ckpt.get("config", {}).get("data", {}).get("scale", cfg.data.scale))
    if scale != cfg.data.scale:
        raise CheckpointError(f"{checkpoint} was trained at x{scale} but data.scale={cfg.data.scale}; "
                              f"set data.scale={scale} or use a x{cfg.data.scale} checkpoint")
    model = build_model(model_cfg, scale).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def run_eval(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path, *, displaced: bool = True,
             keep_predictions: bool = False, split: str = "test") -> tuple[dict[str, float], list[dict], dict]:
    """Evaluate on the held-out fold of ``data.test_dataset`` (default ``data.dataset``).

    Returns ``(summary, per_case_rows, predictions)`` and writes ``summary.csv`` / ``per_case.csv`` in ``out_dir``.
    """
    device = pick_device(cfg.runtime.device)
    seed_everything(cfg.seed)
    prepare_data(cfg)
    images = load_images(cfg.data, split, cfg.data.test_dataset)
    model = load_model(cfg, checkpoint, device)
    shift = cfg.data.displacement.max_shift if displaced else 0
    rows, preds = evaluate(model, images, cfg.data.scale, cfg.data.pad, device, tiled=cfg.eval.tiled,
                           tile=cfg.eval.tile, overlap=test_overlap(cfg), cartesian=cfg.eval.cartesian,
                           displaced_shift=shift, seed=cfg.seed, amp=cfg.runtime.amp,
                           keep_predictions=keep_predictions)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in METRICS if k in rows[0]}
    summary |= {f"{k}_std": float(np.std([r[k] for r in rows])) for k in ("psnr", "ssim") if k in rows[0]}
    summary["n_cases"] = len(rows)
    out_dir = Path(out_dir)
    _write_csv(out_dir / "per_case.csv", rows)
    _write_csv(out_dir / "summary.csv", [summary])
    return summary, rows, preds


def predict_folder(cfg: Config, checkpoint: str | Path | None, folder: str | Path, out: str | Path) -> Path:
    """Super-resolve every 8-bit LR image of a flat ``folder`` (real LR without HR) into ``out`` (8-bit PNG, zero
    padding of ``data.pad // scale`` LR px added and the matching HR padding removed again)."""
    device = pick_device(cfg.runtime.device)
    model = load_model(cfg, checkpoint, device)
    s, lr_pad = cfg.data.scale, cfg.data.pad // cfg.data.scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in list_flat(folder):
        lr = minmax(np.pad(read_polar(path).astype(np.float64), lr_pad), str(path))
        sr = predict_image(model, lr, s, device, cfg.eval.tiled, cfg.eval.tile, test_overlap(cfg), cfg.runtime.amp)
        if lr_pad:
            sr = sr[lr_pad * s:-lr_pad * s, lr_pad * s:-lr_pad * s]
        target = out / f"{name}_x{s}.png"
        cv2.imwrite(str(target), (np.clip(sr, 0, 1) * 255).round().astype(np.uint8))
        rows.append({"input": str(path), "output": str(target), "height": sr.shape[0], "width": sr.shape[1]})
    _write_csv(out / "predictions.csv", rows)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, float] | Path:
    parser = build_arg_parser("Evaluate PAMSR (PSNR/SSIM polar + Cartesian) or predict on LR images", training=False)
    parser.add_argument("--checkpoint", default=None,
                        help="best.pt/last.pt of train.py, or `auto` (best.pt of the newest run of the experiment)")
    parser.add_argument("--predict", default=None, help="flat folder of LR images to super-resolve (no HR needed)")
    parser.add_argument("--out", default=None, help="output folder (default: the checkpoint's run folder)")
    parser.add_argument("--split", default="test", choices=["test", "all"])
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    checkpoint = args.checkpoint
    if checkpoint == "auto":
        run = latest_run("pamsr", cfg.experiment, root=cfg.runs_root, require="checkpoints/best.pt")
        if run is None:
            parser.error(f"--checkpoint auto: no run of experiment {cfg.experiment} under {cfg.runs_root} "
                         f"has a best.pt")
        checkpoint = run / "checkpoints" / "best.pt"
    if args.predict:
        out = resolve_path(args.out or f"{cfg.runs_root}/pamsr/{cfg.experiment}_predict")
        return predict_folder(cfg, checkpoint, args.predict, out)
    if args.out:
        out_dir = Path(args.out)
    elif checkpoint is not None:
        out_dir = Path(checkpoint).resolve().parent.parent / "eval"
    else:
        out_dir = create_run_dir("pamsr", f"{cfg.experiment}_eval", cfg, root=cfg.runs_root).eval
    summary, _, _ = run_eval(cfg, checkpoint, out_dir, split=args.split)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    print(f"wrote {out_dir / 'summary.csv'}")
    return summary


if __name__ == "__main__":
    main()
