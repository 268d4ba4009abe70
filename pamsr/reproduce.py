"""Reproduce the PAMSR comparison on one configuration (issue 7): train the proposed model (SwinIR + registration +
displacement degradation + gradient patch selection) and the baselines/ablations on the same data and fold,
evaluate them with the official protocol (polar PSNR/SSIM) plus Cartesian and displaced-input metrics, check the
registration module against the synthetic ground-truth shifts, and write
``runs/pamsr/reproduce/<timestamp>/comparison.{csv,md}`` with a figure of LR / bicubic / ours / HR crops.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [key=value ...]

Rows: ``pamsr``, ``bicubic``, ``edsr``, ``no_registration`` (trained on the unregistered ``mid_filter`` set),
``no_displacement`` (no displacement augmentation), ``no_patch_selection`` (uniform patches); ``--all`` adds
``signed_official_score`` (the official signed Sobel window score) and ``rec_loss`` (+0.5 scanning-consistency loss).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.config import load_config, to_dict
from common.rundir import create_run_dir, resolve_path
from common.tracking import write_comparison
from pamsr.data import load_images, prepare_data
from pamsr.eval import run_eval
from pamsr.figures import comparison_figure, nearest_upsample
from pamsr.models import build_model, count_parameters
from pamsr.settings import Config
from pamsr.train import PROJECT_DIR, run_training

__all__ = ["VARIANTS", "EXTRA_VARIANTS", "registration_check", "main"]

VARIANTS: list[tuple[str, list[str]]] = [
    ("pamsr", []),
    ("bicubic", ["model.name=bicubic"]),
    ("edsr", ["model.name=edsr"]),
    ("no_registration", ["data.dataset=mid_filter", "data.test_dataset=reg_mid"]),
    ("no_displacement", ["data.displacement_aug=false"]),
    ("no_patch_selection", ["data.patch_select=random"]),
]
EXTRA_VARIANTS: list[tuple[str, list[str]]] = [
    ("signed_official_score", ["data.grad_score=signed_official"]),
    ("rec_loss", ["loss.rec=0.5"]),
]


def registration_check(cfg: Config, n_subpixel: int = 4) -> dict[str, float]:
    """Registration of the synthetic set against ``shifts.csv`` (integer) and of freshly rendered images with
    fractional shifts (sub-pixel mode). Empty dict for real data (no ground truth)."""
    root = resolve_path(cfg.data.root)
    truth_file, est_file = root / "shifts.csv", root / "reg_mid" / "registration.csv"
    if not (truth_file.is_file() and est_file.is_file()):
        return {}
    with truth_file.open() as handle:
        truth = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    with est_file.open() as handle:
        est = {r["sample"]: float(r["shift"]) for r in csv.DictReader(handle)}
    errors = np.array([abs(est[k] - truth[k]) for k in truth if k in est])
    out = {"reg_exact_fraction": float(np.mean(errors == 0)), "reg_mean_abs_error_px": float(errors.mean())}
    from pamsr.registration import estimate_shift
    from pamsr.synth import make_sample

    rng = np.random.default_rng(123)
    sub_err = []
    for _ in range(n_subpixel):
        d = float(np.round(rng.uniform(-cfg.data.synth.max_shift, cfg.data.synth.max_shift), 2))
        raw = make_sample(cfg.data.synth.size, d, rng, cfg.data.synth.noise, cfg.data.synth.speckle_looks)["raw"]
        est_d, _ = estimate_shift(raw, cfg.data.registration.max_shift, subpixel=True,
                                  presmooth=cfg.data.registration.presmooth)
        sub_err.append(abs(est_d - d))
    out["reg_subpixel_max_abs_error_px"] = float(np.max(sub_err))
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="PAMSR: train + evaluate the method, baselines and ablations")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--data-root", default=None, help="dataset root (official layout); default: config's")
    parser.add_argument("--all", action="store_true", help="also the signed-official-score and rec-loss variants")
    parser.add_argument("--only", nargs="*", default=None, help="subset of methods to run (default: all rows)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    base = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    search = [PROJECT_DIR]
    cfg = load_config(Config, args.config, base, search_dirs=search)
    tic = time.time()
    out = create_run_dir("pamsr", "reproduce", cfg, root=cfg.runs_root)
    prepare_data(cfg)
    variants = VARIANTS + (EXTRA_VARIANTS if args.all else [])
    if args.only:
        unknown = set(args.only) - {m for m, _ in variants}
        if unknown:
            parser.error(f"--only: unknown method(s) {sorted(unknown)}; choose from {[m for m, _ in variants]}")
        variants = [v for v in variants if v[0] in args.only]

    rows, preds = [], {}
    for method, extra in variants:
        vcfg = load_config(Config, args.config, base + extra + [f"experiment=reproduce_{method}"], search_dirs=search)
        t0 = time.time()
        checkpoint = None
        if vcfg.model.name != "bicubic":
            print(f"== {method}: training ({' '.join(extra) or 'proposed settings'})", flush=True)
            run_path = run_training(vcfg, progress=False)
            checkpoint = run_path / "checkpoints" / "best.pt"
            eval_dir = run_path / "eval"
        else:
            eval_dir = out.path / "bicubic_eval"
        summary, _, p = run_eval(vcfg, checkpoint, eval_dir, keep_predictions=method in ("pamsr", "bicubic"))
        preds |= {(method, k): v for k, v in p.items()}
        params = count_parameters(build_model(vcfg.model, vcfg.data.scale, vcfg.data.patch_size))
        rows.append({"method": method, **{k: v for k, v in summary.items() if k != "n_cases"},
                     "params": params, "minutes": (time.time() - t0) / 60})
        print(f"== {method}: " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()), flush=True)
        write_comparison(rows, out.path, "PAMSR (partial: run in progress)", notes="Rows so far; the run continues.")

    figures = []
    if any(k[0] == "pamsr" for k in preds) and any(k[0] == "bicubic" for k in preds):
        item = load_images(cfg.data, "test", cfg.data.test_dataset)[0]
        panels = {"LR (nearest)": nearest_upsample(item.lr, cfg.data.scale), "bicubic": preds[("bicubic", item.name)],
                  "ours": preds[("pamsr", item.name)], "HR": item.hr}
        comparison_figure(panels, cfg.data.pad, out.figures / "crops.png", crop=min(128, item.hr.shape[0] // 2))
        figures.append("figures/crops.png")

    reg = registration_check(cfg)
    wall = (time.time() - tic) / 60
    by = {r["method"]: r for r in rows}
    lines = [f"Data: `{cfg.data.root}` (dataset `{cfg.data.dataset}`), x{cfg.data.scale}, fold {cfg.data.fold} of "
             f"{cfg.data.n_folds} (KFold seed {cfg.data.split_seed}); config `{args.config}`; "
             f"wall time {wall:.1f} min.",
             "Metrics: psnr/ssim = official protocol (whole zero-padded polar image, SR quantised to 1/255); "
             "*_cart = after scan conversion to Cartesian; *_displaced = LR inputs whose odd rows are shifted by a "
             f"seeded offset in ±{cfg.data.displacement.max_shift} px. Figure columns: LR (nearest) | bicubic | "
             "ours | HR; top row polar, bottom row Cartesian.",
             "Paper numbers: not available to this project (only the abstract); see README."]
    if "pamsr" in by and "no_displacement" in by:
        d = by["pamsr"]["psnr_displaced"] - by["no_displacement"]["psnr_displaced"]
        lines.append(f"Displacement augmentation on displaced test inputs: {d:+.2f} dB PSNR "
                     f"({'higher' if d > 0 else 'not higher'} than without, as measured).")
    if reg:
        lines.append("Registration on the synthetic set: " + ", ".join(f"{k}={v:.3f}" for k, v in reg.items()) + ".")
    write_comparison(rows, out.path, f"PAMSR x{cfg.data.scale}: method vs baselines and ablations", figures,
                     notes="\n\n".join(lines))
    with (out.path / "settings.txt").open("w") as handle:
        handle.write(str(to_dict(cfg)))
    print((out.path / "comparison.md").read_text())
    print(f"reproduce finished in {wall:.1f} min: {out.path}")
    return out.path


if __name__ == "__main__":
    main()
