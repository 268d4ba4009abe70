"""Evaluate a trained PAMSR model (official test protocol of ``src/trainer_burst_ema.py::test``) or predict on
unlabeled LR images.

Metrics per held-out image: PSNR/SSIM on the padded polar image (official), PSNR/SSIM after scan conversion to
Cartesian, and PSNR/SSIM on displaced LR inputs. The model is rebuilt from the checkpoint's own config. Writes
``eval/summary.csv`` + ``eval/per_case.csv`` and ``figures/eval_crops.png`` (LR / SR / HR crops) in the checkpoint's
run folder (``--out DIR``: ``DIR/summary.csv``, ``DIR/figures/``); the bicubic baseline gets a run folder of its own.

    python eval.py [--checkpoint auto|PATH] [--config FILE] [--split test|all] [key=value ...]
    python eval.py --config configs/default.yaml model.name=bicubic          # the bicubic baseline
    python eval.py --checkpoint auto --predict /path/to/lr_pngs --out /tmp/sr
    python eval.py --checkpoint PATH --overlaps whole,0,4,8,16,32,48 --out DIR     # PSNR against tile overlap
    python eval.py --checkpoint PATH --modes fp32:default:off,bf16:fused:off,bf16:fused:freezing --out DIR
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import CheckpointError, load_checkpoint
from common.cli import eval_parser, parse_eval
from common.config import ConfigError, from_dict
from common.datasets import verify_files
from common.rundir import create_run_dir
from common.runtime import maybe_compile, setup_runtime
from common.tracking import write_eval_tables
from pamsr.data import check_pair, list_flat, load_images, read_polar
from pamsr.degradation import minmax
from pamsr.engine import evaluate, predict_image
from pamsr.figures import comparison_figure, nearest_upsample
from pamsr.inference import bf16_native, default_overlap, for_inference, parse_inference_mode
from pamsr.models import build_model
from pamsr.pipeline import prepare_data
from pamsr.settings import PROJECT_DIR, Config, ModelConfig

__all__ = ["METRICS", "load_model", "test_overlap", "summarise", "run_eval", "overlap_sweep",
           "mode_sweep", "predict_folder", "main"]

METRICS = ("psnr", "psnr_clean", "psnr_clean_displaced", "ssim_clean", "ssim", "psnr_cart", "ssim_cart",
           "psnr_displaced", "ssim_displaced")


def test_overlap(cfg: Config) -> int:
    """``eval.tile_overlap`` or the official test-mode default ``64 - 32 // s``."""
    if cfg.eval.tile_overlap is not None:
        return cfg.eval.tile_overlap
    return default_overlap(cfg.data.scale, cfg.eval.tile)


def load_model(cfg: Config, checkpoint: str | Path | None, device: torch.device) -> torch.nn.Module:
    """Model from ``checkpoint`` (architecture taken from the checkpoint's config) or parameter-free bicubic."""
    if cfg.model.name == "bicubic":
        return build_model(cfg.model, cfg.data.scale).to(device).eval()
    if checkpoint is None:
        raise CheckpointError(f"model.name={cfg.model.name} needs --checkpoint (a best.pt or last.pt of train.py)")
    ckpt = load_checkpoint(checkpoint)
    saved = ckpt.get("config", {}).get("model")
    try:
        model_cfg = cfg.model if saved is None else from_dict(ModelConfig, saved)
    except ConfigError as exc:
        raise CheckpointError(f"{checkpoint}: its model config is not readable ({exc})") from exc
    scale = int(ckpt.get("config", {}).get("data", {}).get("scale", cfg.data.scale))
    if scale != cfg.data.scale:
        raise CheckpointError(f"{checkpoint} was trained at x{scale} but data.scale={cfg.data.scale}; "
                              f"set data.scale={scale} or use a x{cfg.data.scale} checkpoint")
    model = build_model(model_cfg, scale).to(device)
    if cfg.eval.weights == "ema":
        if "ema" not in ckpt.get("extra", {}):
            raise CheckpointError(f"eval.weights=ema: {checkpoint} holds no EMA weights; train with optim.ema=0.999 "
                                  f"(or evaluate with eval.weights=model)")
        model.load_state_dict(ckpt["extra"]["ema"])
    else:
        model.load_state_dict(ckpt["model"])
    return maybe_compile(model.eval(), cfg.runtime.compile)


def summarise(rows: Sequence[dict]) -> dict[str, float]:
    """Means of every metric, standard deviations of psnr/ssim and the number of cases."""
    summary = {k: float(np.mean([r[k] for r in rows])) for k in METRICS if k in rows[0]}
    summary |= {f"{k}_std": float(np.std([r[k] for r in rows])) for k in ("psnr", "ssim") if k in rows[0]}
    summary["n_cases"] = len(rows)
    return summary


def run_eval(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path, *, figures_dir: Path | None = None,
             displaced: bool = True, keep_predictions: bool = False, split: str = "test"
             ) -> tuple[dict[str, float], list[dict], dict]:
    """Evaluate on the held-out fold of ``data.test_dataset`` (default ``data.dataset``).

    Returns ``(summary, per_case_rows, predictions)``; writes ``summary.csv`` / ``per_case.csv`` in ``out_dir``
    (:func:`common.tracking.write_eval_tables`) and LR / SR / HR crops of the first image into ``figures_dir``.
    """
    device = setup_runtime(cfg.runtime, cfg.seed)
    prepare_data(cfg)
    images = load_images(cfg.data, split, cfg.data.test_dataset)
    model = load_model(cfg, checkpoint, device)
    rows, preds = evaluate(model, images, cfg.data.scale, cfg.data.pad, device, tiled=cfg.eval.tiled,
                           tile=cfg.eval.tile, overlap=test_overlap(cfg), cartesian=cfg.eval.cartesian,
                           displaced_shift=cfg.displacement.max_shift if displaced else 0, seed=cfg.seed,
                           amp=cfg.runtime.amp, keep_predictions=True, progress=cfg.runtime.progress,
                           self_ensemble=cfg.eval.self_ensemble)
    summary = summarise(rows)
    write_eval_tables(out_dir, summary, rows)
    if figures_dir is not None:
        item = images[0]
        panels = {"LR (nearest)": nearest_upsample(item.lr, cfg.data.scale), cfg.model.name: preds[item.name],
                  "HR": item.hr}
        comparison_figure(panels, cfg.data.pad, figures_dir / "eval_crops.png", crop=min(128, item.hr.shape[0] // 2))
    return summary, rows, preds if keep_predictions else {}


def overlap_sweep(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path, overlaps: Sequence[str],
                  split: str = "test", displaced: bool = False) -> Path:
    """Evaluate the same weights with whole-image inference (``whole``) and tiled inference at every LR tile
    overlap in ``overlaps`` (tile ``eval.tile``); one ``overlap_<k>/summary.csv`` each and ``overlap_sweep.csv``
    (overlap, the metric means, evaluation seconds). Displaced-input metrics only with ``displaced``."""
    out_dir = Path(out_dir)
    rows = []
    for value in overlaps:
        tiled = value != "whole"
        sub = replace(cfg, eval=replace(cfg.eval, tiled=tiled, tile_overlap=int(value) if tiled else None))
        tic = time.perf_counter()
        summary, _, _ = run_eval(sub, checkpoint, out_dir / f"overlap_{value}", split=split, displaced=displaced)
        rows.append({"overlap": value, **{k: summary[k] for k in METRICS if k in summary},
                     "n_cases": summary["n_cases"], "seconds": round(time.perf_counter() - tic, 1)})
        print(f"overlap {value}: " + " ".join(f"{k}={v:.4f}" for k, v in rows[-1].items() if isinstance(v, float)))
    target = out_dir / "overlap_sweep.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {target}")
    return target


def mode_model(cfg: Config, checkpoint: str | Path | None, device: torch.device, mode: dict[str, str]
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The checkpoint's network with the attention path of ``mode`` and, for ``inductor`` / ``freezing``,
    compiled for inference (:func:`pamsr.inference.for_inference`)."""
    model = load_model(replace(cfg, runtime=replace(cfg.runtime, compile=False)), checkpoint, device)
    if mode["compile"] != "off":
        import torch._dynamo

        torch._dynamo.reset()  # a fresh compilation per mode
    return for_inference(model, mode["attention"], mode["compile"])


def mode_sweep(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path, modes: Sequence[str],
               split: str = "test") -> Path:
    """Evaluate the same trained weights under every inference mode ``precision:attention:compile`` (tiling of
    ``eval.tiled`` / ``eval.tile_overlap``) -> ``mode_sweep.csv``: the metric means, their differences to the
    first mode (the reference, normally ``fp32:default:off``), the largest per-pixel SR difference to it and the
    evaluation seconds (first call of a compiled mode included). Displaced-input metrics are not computed."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    prepare_data(cfg)
    images = load_images(cfg.data, split, cfg.data.test_dataset)
    rows, reference = [], None
    for spec in modes:
        mode = parse_inference_mode(spec)
        if mode["precision"] == "bf16" and not bf16_native(device):
            rows.append({"mode": spec, "status": "unsupported (no bf16 matmul support reported by torch)"})
            continue
        amp = "bf16" if mode["precision"] == "bf16" else "off"
        tic = time.perf_counter()
        per_case, preds = evaluate(mode_model(cfg, checkpoint, device, mode), images, cfg.data.scale, cfg.data.pad,
                                   device, tiled=cfg.eval.tiled, tile=cfg.eval.tile, overlap=test_overlap(cfg),
                                   cartesian=False, amp=amp, keep_predictions=True, progress=cfg.runtime.progress)
        summary = summarise(per_case)
        row = {"mode": spec, "status": "ok", **{k: summary[k] for k in METRICS if k in summary},
               "n_cases": summary["n_cases"], "seconds": round(time.perf_counter() - tic, 1)}
        if reference is None:
            reference = (row, preds)
        for k in ("psnr", "psnr_clean", "ssim_clean"):
            if k in row and k in reference[0]:
                row[f"{k}_vs_first"] = row[k] - reference[0][k]
        row["max_abs_diff_vs_first"] = max(float(np.abs(preds[n] - reference[1][n]).max()) for n in preds)
        rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "mode_sweep.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {target}")
    return target


def predict_folder(cfg: Config, checkpoint: str | Path | None, folder: str | Path, out: str | Path) -> Path:
    """Super-resolve every 8-bit LR image of a flat ``folder`` (real LR without HR) into ``out`` (8-bit PNG, zero
    padding of ``data.pad // scale`` LR px added and the matching HR padding removed again) + ``predictions.csv``."""
    images = list_flat(folder)
    verify_files([path for _, path in images], cfg.data.verify, what="LR image")  # before any output is written
    device = setup_runtime(cfg.runtime, cfg.seed)
    model = load_model(cfg, checkpoint, device)
    s, lr_pad = cfg.data.scale, cfg.data.pad // cfg.data.scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in tqdm(images, desc="predict", disable=not cfg.runtime.progress, leave=False):
        lr = minmax(np.pad(read_polar(path).astype(np.float64), lr_pad), str(path))
        sr = predict_image(model, lr, s, device, cfg.eval.tiled, cfg.eval.tile, test_overlap(cfg), cfg.runtime.amp,
                           cfg.eval.self_ensemble)
        check_pair(lr, sr, s, f"{path} (network output)")
        if lr_pad:
            sr = sr[lr_pad * s:-lr_pad * s, lr_pad * s:-lr_pad * s]
        target = out / f"{name}_x{s}.png"
        cv2.imwrite(str(target), (np.clip(sr, 0, 1) * 255).round().astype(np.uint8))
        rows.append({"input": str(path), "output": str(target), "height": sr.shape[0], "width": sr.shape[1]})
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["input", "output", "height", "width"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def output_dirs(cfg: Config, checkpoint: Path | None, out: str | None, kind: str) -> tuple[Path, Path]:
    """``(tables_or_predictions_dir, figures_dir)``: ``--out``, else the checkpoint's run folder (``eval/`` or
    ``predict/``), else (bicubic) a new run ``runs/pamsr/<experiment>-bicubic/<timestamp>/``."""
    if out is not None:
        return Path(out), Path(out) / "figures"
    if checkpoint is not None:
        run = checkpoint.resolve().parent.parent
        return run / kind, run / "figures"
    run = create_run_dir("pamsr", f"{cfg.experiment}-{cfg.model.name}", cfg, root=cfg.runs_root)
    return run.path / kind, run.figures


def main(argv: Sequence[str] | None = None) -> dict[str, float] | Path:
    parser = eval_parser("Evaluate PAMSR (PSNR/SSIM polar + Cartesian + displaced) or predict on LR images")
    parser.add_argument("--split", default="test", choices=["test", "all"], help="held-out fold or every sample")
    parser.add_argument("--overlaps", default=None, metavar="whole,0,8,...",
                        help="evaluate whole-image and tiled inference at each LR tile overlap (overlap_sweep.csv)")
    parser.add_argument("--modes", default=None, metavar="fp32:default:off,bf16:fused:freezing,...",
                        help="evaluate the checkpoint under each inference mode precision:attention:compile "
                             "(mode_sweep.csv; differences to the first mode)")
    parsed = parse_eval(Config, argv, parser, "pamsr", PROJECT_DIR, require_checkpoint=False)
    cfg, checkpoint, args = parsed.config, parsed.checkpoint, parsed.args
    if checkpoint is None and args.checkpoint != "auto":
        parser.error(f"--checkpoint {args.checkpoint}: file not found")
    if cfg.model.name == "bicubic":
        checkpoint = None  # parameter-free: nothing to load, and its tables must not land in a trained run's folder
    elif checkpoint is None:
        parser.error(f"model.name={cfg.model.name} needs --checkpoint: no best.pt/last.pt of experiment "
                     f"`{cfg.experiment}` under {cfg.runs_root}; train first or pass --checkpoint PATH")
    if args.predict:
        return predict_folder(cfg, checkpoint, args.predict, output_dirs(cfg, checkpoint, args.out, "predict")[0])
    out_dir, figures_dir = output_dirs(cfg, checkpoint, args.out, "eval")
    if args.overlaps:
        overlaps = [x for x in args.overlaps.split(",") if x]
        bad = [x for x in overlaps if x != "whole" and not (x.isdigit() and int(x) < cfg.eval.tile)]
        if bad:
            parser.error(f"--overlaps {bad}: use `whole` or integers in [0, eval.tile={cfg.eval.tile})")
        return overlap_sweep(cfg, checkpoint, out_dir, overlaps, args.split)
    if args.modes:
        modes = [x for x in args.modes.split(",") if x]
        try:
            [parse_inference_mode(x) for x in modes]
        except ValueError as exc:
            parser.error(str(exc))
        return mode_sweep(cfg, checkpoint, out_dir, modes, args.split)
    summary, _, _ = run_eval(cfg, checkpoint, out_dir, figures_dir=figures_dir, split=args.split)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    print(f"wrote {out_dir / 'summary.csv'}")
    return summary


if __name__ == "__main__":
    main()
