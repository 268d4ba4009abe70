"""Reproduce the PAMSR comparison on one configuration: train the proposed model (SwinIR + registration +
displacement degradation + gradient patch selection) and the baselines/ablations of the paper's tables on the same
data and fold, evaluate them with the official protocol (polar PSNR/SSIM) plus Cartesian and displaced-input
metrics, check the registration module against the synthetic ground-truth shifts, and write
``runs/pamsr/reproduce/<timestamp>/comparison.{csv,md}`` with a figure of LR / bicubic / ours / HR crops. Each row
trains (or, for bicubic, only evaluates) in its own run ``runs/pamsr/reproduce-<row>-s<seed>/<timestamp>/``.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [--only ROW,ROW] [key=value ...]

Rows: ``pamsr``, ``bicubic``, ``edsr``, ``no_registration`` (trained on the unregistered ``mid_filter`` set),
``no_displacement`` (no displacement augmentation), ``no_patch_selection`` (uniform patches); ``--all`` adds
``signed_official_score`` (the official signed Sobel window score) and ``rec_loss`` (+0.5 scanning-consistency loss).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.cli import DEFAULT_CONFIG, data_root_overrides, parse_reproduce, reproduce_parser
from common.config import ConfigError, load_config
from common.rundir import create_run_dir, resolve_path
from common.tracking import write_comparison
from pamsr.data import load_images
from pamsr.eval import run_eval
from pamsr.figures import comparison_figure, nearest_upsample
from pamsr.models import build_model, count_parameters
from pamsr.pipeline import prepare_data
from pamsr.registration import estimate_shift
from pamsr.settings import PROJECT_DIR, Config
from pamsr.synth import make_sample
from pamsr.train import run_training

__all__ = ["VARIANTS", "EXTRA_VARIANTS", "ROWS", "registration_check", "row_configs", "run_row", "main"]

VARIANTS: list[tuple[str, list[str]]] = [
    ("pamsr", []),
    ("bicubic", ["model.name=bicubic"]),
    ("edsr", ["model.name=edsr"]),
    ("no_registration", ["data.dataset=mid_filter", "data.test_dataset=reg_mid"]),
    ("no_displacement", ["displacement.enabled=false"]),
    ("no_patch_selection", ["patch_selection.mode=random"]),
]
EXTRA_VARIANTS: list[tuple[str, list[str]]] = [
    ("signed_official_score", ["patch_selection.score=signed_official"]),
    ("rec_loss", ["loss.rec=0.5"]),
]
ROWS = [m for m, _ in VARIANTS + EXTRA_VARIANTS]
KEEP_PREDICTIONS = ("pamsr", "bicubic")


def registration_check(cfg: Config, n_subpixel: int = 4) -> dict[str, float]:
    """Registration of the synthetic set against ``shifts.csv`` (integer) and of freshly rendered images with
    fractional shifts (sub-pixel mode). Empty dict for real data (no ground truth)."""
    root = resolve_path(cfg.data.root)
    truth_file, est_file = root / "shifts.csv", root / "reg_mid" / "registration.csv"
    if not (cfg.data.synthetic and truth_file.is_file() and est_file.is_file()):
        return {}
    with truth_file.open() as handle:
        truth = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    with est_file.open() as handle:
        est = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    errors = np.array([abs(est[k] - truth[k]) for k in truth if k in est])
    out = {"reg_exact_fraction": float(np.mean(errors == 0)), "reg_mean_abs_error_px": float(errors.mean())}
    rng = np.random.default_rng(123)
    sub_err = []
    for _ in range(n_subpixel):
        d = float(np.round(rng.uniform(-cfg.data.synth.max_shift, cfg.data.synth.max_shift), 2))
        raw = make_sample(cfg.data.synth.size, d, rng, cfg.data.synth.noise, cfg.data.synth.speckle_looks)["raw"]
        est_d, _ = estimate_shift(raw, cfg.registration.max_shift, subpixel=True,
                                  presmooth=cfg.registration.presmooth)
        sub_err.append(abs(est_d - d))
    out["reg_subpixel_max_abs_error_px"] = float(np.max(sub_err))
    return out


def row_configs(config: str, base: Sequence[str], methods: Sequence[str], seed: int) -> list[tuple[str, Config]]:
    """Every row's validated config (before any work): the base overrides, then the row's own, one experiment per
    row and seed (``reproduce-<row>-s<seed>``)."""
    extras = dict(VARIANTS + EXTRA_VARIANTS)
    return [(m, load_config(Config, config, [*base, *extras[m], f"experiment=reproduce-{m}-s{seed}"],
                            search_dirs=[PROJECT_DIR])) for m in methods]


def run_row(method: str, cfg: Config) -> tuple[dict, dict]:
    """Train (unless bicubic) and evaluate one row -> ``(comparison row, predictions of the held-out images)``."""
    tic = time.time()
    if cfg.model.name == "bicubic":
        run, checkpoint = create_run_dir("pamsr", cfg.experiment, cfg, root=cfg.runs_root).path, None
    else:
        print(f"== {method}: training", flush=True)
        run = run_training(cfg)
        checkpoint = run / "checkpoints" / "best.pt"
    summary, _, preds = run_eval(cfg, checkpoint, run / "eval", figures_dir=run / "figures",
                                 keep_predictions=method in KEEP_PREDICTIONS)
    params = count_parameters(build_model(cfg.model, cfg.data.scale, cfg.data.patch_size))
    row = {"method": method, **{k: v for k, v in summary.items() if k != "n_cases"}, "params": params,
           "minutes": (time.time() - tic) / 60}
    print(f"== {method}: " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()), flush=True)
    return row, preds


def crops_figure(cfg: Config, preds: dict, out: Path) -> list[str]:
    """LR (nearest) | bicubic | ours | HR crops of the first held-out image, when both rows ran."""
    if not (preds.get("pamsr") and preds.get("bicubic")):
        return []
    item = load_images(cfg.data, "test", cfg.data.test_dataset)[0]
    panels = {"LR (nearest)": nearest_upsample(item.lr, cfg.data.scale), "bicubic": preds["bicubic"][item.name],
              "ours": preds["pamsr"][item.name], "HR": item.hr}
    comparison_figure(panels, cfg.data.pad, out / "figures" / "crops.png", crop=min(128, item.hr.shape[0] // 2))
    return ["figures/crops.png"]


def notes(cfg: Config, rows: Sequence[dict], reg: dict[str, float], config: str, wall: float) -> str:
    """The comparison page's text: data, protocol, and what the ablations show as measured."""
    by = {r["method"]: r for r in rows}
    lines = [f"Data: `{cfg.data.root}` (dataset `{cfg.data.dataset}`), x{cfg.data.scale}, fold {cfg.data.fold} of "
             f"{cfg.data.n_folds} (KFold seed {cfg.data.split_seed}); config `{config}`; seed {cfg.seed}; "
             f"wall time {wall:.1f} min.",
             "Metrics: psnr/ssim = official protocol (whole zero-padded polar image, SR quantised to 1/255); "
             "*_cart = after scan conversion to Cartesian; *_displaced = LR inputs whose odd rows are shifted by a "
             f"seeded offset in ±{cfg.displacement.max_shift} px. Figure columns: LR (nearest) | bicubic | "
             "ours | HR; top row polar, bottom row Cartesian.",
             "Paper numbers: not available to this project (only the abstract); see README."]
    if "pamsr" in by and "no_displacement" in by:
        d = by["pamsr"]["psnr_displaced"] - by["no_displacement"]["psnr_displaced"]
        lines.append(f"Displacement augmentation on displaced test inputs: {d:+.2f} dB PSNR "
                     f"({'higher' if d > 0 else 'not higher'} than without, as measured).")
    if reg:
        lines.append("Registration on the synthetic set: " + ", ".join(f"{k}={v:.3f}" for k, v in reg.items()) + ".")
    return "\n\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = reproduce_parser("PAMSR: train + evaluate the method, baselines and ablations on the same data")
    _, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=ROWS)
    config = args.config or DEFAULT_CONFIG
    base = [*args.overrides, *data_root_overrides(args.data_root), *([f"runs_root={args.out}"] if args.out else [])]
    methods = args.only or [m for m, _ in VARIANTS + (EXTRA_VARIANTS if args.all else [])]
    try:
        cfg = load_config(Config, config, base, search_dirs=[PROJECT_DIR])
        configs = row_configs(config, base, methods, cfg.seed)
    except ConfigError as exc:
        parser.error(str(exc))
    tic = time.time()
    prepare_data(cfg)
    out = create_run_dir("pamsr", "reproduce", cfg, root=cfg.runs_root)
    rows, preds = [], {}
    for method, row_cfg in configs:
        row, preds[method] = run_row(method, row_cfg)
        rows.append(row)
        write_comparison(rows, out.path, "PAMSR (partial: run in progress)", notes="Rows so far; the run continues.")
    figures = crops_figure(cfg, preds, out.path)
    wall = (time.time() - tic) / 60
    write_comparison(rows, out.path, f"PAMSR x{cfg.data.scale}: method vs baselines and ablations", figures,
                     notes=notes(cfg, rows, registration_check(cfg), config, wall))
    print((out.path / "comparison.md").read_text())
    print(f"reproduce finished in {wall:.1f} min: {out.path}")
    return out.path


if __name__ == "__main__":
    main()
