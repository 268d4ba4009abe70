"""Reproduce the PAMSR comparison on one configuration: train the proposed model (SwinIR + registration +
displacement degradation + gradient patch selection) and the baselines/ablations of the paper's tables on the same
data and folds over several seeds, evaluate them with the official protocol (polar PSNR/SSIM against the HR scan)
plus the noise-free ground truth (``*_clean``, synthetic data) and displaced-input metrics, check the registration
module against the synthetic ground-truth shifts, check the paper's claims on the seed means, and write
``runs/pamsr/reproduce/<timestamp>/comparison.{csv,md}`` (mean and ``_std`` over seeds), ``per_seed.csv``,
``claims.csv`` and a figure of LR / bicubic / ours / HR crops. Each row and seed trains (or, for bicubic, only
evaluates) in its own run ``runs/pamsr/reproduce-<row>-s<seed>/<timestamp>/``; ``--jobs N`` runs N of them at a
time, each with one thread.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [--only ROW,ROW]
                        [--seeds 1,2,3] [--folds 0,1,2,3,4] [--jobs 2] [key=value ...]

``--folds``: the test folds (default: ``data.fold`` alone; ``--all``: every fold of ``data.n_folds``). Test fold k
validates on fold (k + 1) mod ``n_folds`` when the config has a separate validation fold (``data.val_fold`` set),
on the test fold itself otherwise (official); rows are averaged over every (fold, seed) run.

Rows: ``pamsr``, ``bicubic``, ``edsr``, ``no_registration`` (trained on the unregistered
``data.unregistered_dataset``), ``no_displacement`` (no displacement augmentation), ``no_patch_selection`` (uniform
patches); ``--all`` adds ``signed_official_score`` (the official signed Sobel window score), ``rec_loss`` (+0.5
scanning-consistency loss), CPU-sized ``han``, ``rdn`` and ``fd_unet`` baselines and, from the ``pamsr`` runs
without further training, ``pamsr_ema`` (EMA weights, decay 0.999) and ``pamsr_self_ensemble`` (x8 geometric
self-ensemble).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.cli import DEFAULT_CONFIG, data_root_overrides, parse_reproduce, reproduce_parser
from common.config import load_config
from common.rundir import create_run_dir, resolve_path
from common.tracking import write_comparison
from pamsr.data import load_images
from pamsr.eval import run_eval
from pamsr.figures import comparison_figure, nearest_upsample
from pamsr.headroom import measure as measure_headroom
from pamsr.models import build_model, count_parameters
from pamsr.pipeline import prepare_data
from pamsr.registration import estimate_shift
from pamsr.settings import PROJECT_DIR, Config
from pamsr.synth import make_sample
from pamsr.train import run_training

__all__ = ["VARIANTS", "EXTRA_VARIANTS", "ROWS", "registration_check", "row_overrides", "row_configs", "run_row",
           "run_all", "aggregate", "check_claims", "write_table", "main"]

VARIANTS: list[tuple[str, list[str]]] = [
    ("pamsr", []),
    ("bicubic", ["model.name=bicubic"]),
    ("edsr", ["model.name=edsr"]),
    ("no_registration", []),  # see row_overrides
    ("no_displacement", ["displacement.enabled=false"]),
    ("no_patch_selection", ["patch_selection.mode=random"]),
]
EXTRA_VARIANTS: list[tuple[str, list[str]]] = [
    ("signed_official_score", ["patch_selection.score=signed_official"]),
    ("rec_loss", ["loss.rec=0.5"]),
    ("han", ["model.name=han", "model.n_resgroups=2", "model.n_resblocks=4", "model.n_feats=32", "model.reduction=8"]),
    ("rdn", ["model.name=rdn", "model.rdn_blocks=4", "model.rdn_layers=4", "model.rdn_growth=16", "model.n_feats=32"]),
    ("fd_unet", ["model.name=fd_unet", "model.n_feats=16", "model.unet_levels=3", "model.rdn_layers=4"]),
]
ROWS = [m for m, _ in VARIANTS + EXTRA_VARIANTS]
KEEP_PREDICTIONS = ("pamsr", "bicubic")
COLUMNS = ("psnr", "psnr_clean", "psnr_clean_displaced", "ssim_clean")
EVAL_VARIANTS: list[tuple[str, dict]] = [("pamsr_ema", {"weights": "ema"}), ("pamsr_self_ensemble",
                                                                          {"self_ensemble": True})]
ALL_OVERRIDES = ["optim.ema=0.999"]  # --all: keep the EMA of every run (it does not change the training)


def registration_check(cfg: Config, n_subpixel: int = 4) -> dict[str, float]:
    """Registration of the synthetic set (``<data.dataset>/registration.csv``) against the fixed odd-row shift of
    ``shifts.csv`` (the drift around it averages out over a scan), and of freshly rendered images with fractional
    constant shifts (sub-pixel mode). Empty dict for real data (no ground truth)."""
    root = resolve_path(cfg.data.root)
    truth_file, est_file = root / "shifts.csv", root / cfg.data.dataset / "registration.csv"
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
        synth = cfg.data.synth
        raw = make_sample(synth.size, d, rng, synth.noise, synth.speckle_looks, synth)["raw"]
        est_d, _ = estimate_shift(raw, cfg.registration.max_shift, subpixel=True,
                                  presmooth=cfg.registration.presmooth)
        sub_err.append(abs(est_d - d))
    out["reg_subpixel_max_abs_error_px"] = float(np.max(sub_err))
    return out


def row_overrides(method: str, base: Config) -> list[str]:
    """The overrides of one row; ``no_registration`` trains on ``data.unregistered_dataset`` and is tested on the
    registered set like every other row."""
    if method == "no_registration":
        return [f"data.dataset={base.data.unregistered_dataset}",
                f"data.test_dataset={base.data.test_dataset or base.data.dataset}"]
    return list(dict(VARIANTS + EXTRA_VARIANTS)[method])


def fold_overrides(base: Config, fold: int) -> list[str]:
    """Test fold ``fold``; validation on the next fold when the config validates on a separate fold."""
    if not 0 <= fold < base.data.n_folds:
        raise ValueError(f"--folds: fold {fold} is outside 0..{base.data.n_folds - 1} (data.n_folds="
                         f"{base.data.n_folds})")
    val = [] if base.data.val_fold is None else [f"data.val_fold={(fold + 1) % base.data.n_folds}"]
    return [f"data.fold={fold}", *val]


def row_configs(config: str, base: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
                folds: Sequence[int] | None = None) -> list[tuple[str, int, Config]]:
    """Every (row, fold, seed)'s validated config (before any work): the base overrides, then the fold's and the
    row's own, one experiment per row, fold and seed (``reproduce-<row>-s<seed>``; ``reproduce-<row>-f<fold>-s<seed>``
    when ``folds`` is given). ``folds=None``: the config's own test and validation folds."""
    cfg = load_config(Config, config, base, search_dirs=[PROJECT_DIR])
    plan = [(None, [])] if folds is None else [(k, fold_overrides(cfg, k)) for k in folds]
    return [(m, seed, load_config(Config, config, [*base, *fold_ov, *row_overrides(m, cfg), f"seed={seed}",
                                                   f"experiment=reproduce-{m}{'' if k is None else f'-f{k}'}-s{seed}"],
                                  search_dirs=[PROJECT_DIR]))
            for k, fold_ov in plan for seed in seeds for m in methods]  # an interrupted run keeps complete seeds


def eval_variants(method: str, cfg: Config, checkpoint: Path | None, run: Path) -> list[dict]:
    """``--all`` only: the ``pamsr`` run evaluated again with its EMA weights (``pamsr_ema``, when trained with
    ``optim.ema``) and with the x8 self-ensemble (``pamsr_self_ensemble``); no extra training."""
    if method != "pamsr" or checkpoint is None or cfg.optim.ema <= 0:
        return []
    rows = []
    for name, override in EVAL_VARIANTS:
        variant = replace(cfg, eval=replace(cfg.eval, **override))
        summary, _, _ = run_eval(variant, checkpoint, run / f"eval_{name}")
        rows.append({"method": name, "seed": cfg.seed, "fold": cfg.data.fold,
                     **{k: v for k, v in summary.items() if k != "n_cases"}})
    return rows


def run_row(method: str, cfg: Config) -> tuple[list[dict], dict]:
    """Train (unless bicubic) and evaluate one row and seed -> ``(rows, predictions of the test images)``: the
    row itself, then its evaluation variants (:func:`eval_variants`)."""
    tic = time.time()
    if cfg.model.name == "bicubic":
        run, checkpoint = create_run_dir("pamsr", cfg.experiment, cfg, root=cfg.runs_root).path, None
    else:
        print(f"== {method} seed {cfg.seed}: training", flush=True)
        run = run_training(cfg)
        checkpoint = run / "checkpoints" / "best.pt"
    summary, _, preds = run_eval(cfg, checkpoint, run / "eval", figures_dir=run / "figures",
                                 keep_predictions=method in KEEP_PREDICTIONS)
    params = count_parameters(build_model(cfg.model, cfg.data.scale, cfg.data.patch_size))
    row = {"method": method, "seed": cfg.seed, "fold": cfg.data.fold,
           **{k: v for k, v in summary.items() if k != "n_cases"},
           "params": params, "minutes": (time.time() - tic) / 60, "run": str(run)}
    print(f"== {method} seed {cfg.seed}: " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()), flush=True)
    extra = [r | {"params": params, "minutes": row["minutes"], "run": str(run)}
             for r in eval_variants(method, cfg, checkpoint, run)]
    return [row, *extra], preds


def run_all(tasks: Sequence[tuple[str, int, Config]], jobs: int, on_done: Callable[[list[dict]], None]
            ) -> tuple[list[dict], dict]:
    """Every (row, seed), ``jobs`` at a time in fresh processes (``jobs == 1``: in this process, in order).
    Returns the per-seed rows in task order and the predictions of the first seed's rows."""
    results: dict[int, tuple[list[dict], dict]] = {}

    def done() -> list[dict]:
        return [row for k in sorted(results) for row in results[k][0]]

    if jobs <= 1:
        for i, (method, _, cfg) in enumerate(tasks):
            results[i] = run_row(method, cfg)
            on_done(done())
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_row, method, cfg): i for i, (method, _, cfg) in enumerate(tasks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                on_done(done())
    rows = done()
    first = (tasks[0][1], tasks[0][2].data.fold) if tasks else None
    preds = {tasks[i][0]: results[i][1] for i in range(len(tasks)) if (tasks[i][1], tasks[i][2].data.fold) == first}
    return rows, preds


def aggregate(per_seed: Sequence[dict]) -> list[dict]:
    """One row per method: the mean over its runs (every fold and seed) of each of :data:`COLUMNS`, its ``_std``
    (population std over those runs), the number of ``seeds`` and of ``folds``; headline column first
    (official-protocol ``psnr``). Every metric of every run is in ``per_seed.csv``."""
    out = []
    for method in dict.fromkeys(r["method"] for r in per_seed):
        rows = [r for r in per_seed if r["method"] == method]
        row: dict = {"method": method}
        for key in [k for k in COLUMNS if k in rows[0]]:
            values = np.array([r[key] for r in rows], dtype=float)
            row[key], row[f"{key}_std"] = float(values.mean()), float(values.std())
        row |= {"seeds": len({r["seed"] for r in rows}), "folds": len({r.get("fold") for r in rows}),
                "params": rows[0]["params"],
                "minutes": float(np.mean([r["minutes"] for r in rows]))}
        out.append(row)
    return out


def check_claims(rows: Sequence[dict]) -> list[dict]:
    """The paper's claims on the seed means (PSNR against the clean image; held when the margin is reached):
    pamsr >= bicubic + 1 dB and >= EDSR; each ablation >= 0.1 dB below pamsr (no_displacement on displaced
    inputs)."""
    by = {r["method"]: r for r in rows}
    specs = [("pamsr >= bicubic + 1.0 dB (psnr_clean)", "bicubic", "psnr_clean", 1.0),
             ("pamsr >= edsr (psnr_clean)", "edsr", "psnr_clean", 0.0),
             ("no_registration <= pamsr - 0.1 dB (psnr_clean)", "no_registration", "psnr_clean", 0.1),
             ("no_patch_selection <= pamsr - 0.1 dB (psnr_clean)", "no_patch_selection", "psnr_clean", 0.1),
             ("no_displacement <= pamsr - 0.1 dB (psnr_clean_displaced)", "no_displacement",
              "psnr_clean_displaced", 0.1)]
    out = []
    for claim, other, key, margin in specs:
        if "pamsr" in by and other in by and key in by["pamsr"]:
            gap = by["pamsr"][key] - by[other][key]
            spread = by["pamsr"][f"{key}_std"] + by[other][f"{key}_std"]
            out.append({"claim": claim, "gap_db": gap, "std_sum_db": spread, "held": bool(gap >= margin)})
    return out


def crops_figure(cfg: Config, preds: dict, out: Path) -> list[str]:
    """LR (nearest) | bicubic | ours | HR crops of the first held-out image, when both rows ran."""
    if not (preds.get("pamsr") and preds.get("bicubic")):
        return []
    item = load_images(cfg.data, "test", cfg.data.test_dataset)[0]
    panels = {"LR (nearest)": nearest_upsample(item.lr, cfg.data.scale), "bicubic": preds["bicubic"][item.name],
              "ours": preds["pamsr"][item.name], "HR": item.hr}
    comparison_figure(panels, cfg.data.pad, out / "figures" / "crops.png", crop=min(128, item.hr.shape[0] // 2))
    return ["figures/crops.png"]


def write_table(rows: Sequence[dict], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def headroom(cfg: Config) -> dict[str, float]:
    """Bicubic, best linear 6x6 predictor and HR scan against the clean test images (synthetic data only)."""
    train, test = load_images(cfg.data, "train"), load_images(cfg.data, "test", cfg.data.test_dataset)
    return measure_headroom(train, test, cfg.data.scale) if test and test[0].clean is not None else {}


def notes(cfg: Config, rows: Sequence[dict], claims: Sequence[dict], reg: dict[str, float], config: str,
          wall: float, room: dict[str, float] | None = None) -> str:
    """The comparison page's text: data, protocol, the claims as measured and the registration check."""
    seeds = sorted({r["seeds"] for r in rows})
    folds = sorted({r["folds"] for r in rows})
    if folds == [1]:
        val = "the test fold (official)" if cfg.data.val_fold is None else f"fold {cfg.data.val_fold}"
        split = f"test fold {cfg.data.fold} of {cfg.data.n_folds} (KFold seed {cfg.data.split_seed}), validation " \
                f"(best epoch) on {val}"
    else:
        val = "the test fold (official)" if cfg.data.val_fold is None else "the next fold"
        split = f"{'/'.join(map(str, folds))} test folds of {cfg.data.n_folds} per row (KFold seed " \
                f"{cfg.data.split_seed}), validation (best epoch) on {val}"
    lines = [f"Data: `{cfg.data.root}` (dataset `{cfg.data.dataset}`), x{cfg.data.scale}, {split}; config "
             f"`{config}`; {'/'.join(map(str, seeds))} seeds per row (mean, `_std` = std over every fold and seed "
             f"run); wall time {wall:.1f} min.",
             "Metrics: psnr/ssim = official protocol (whole zero-padded polar image against the HR scan, SR quantised "
             "to 1/255); *_clean = the same against the noise-free ground truth; *_displaced = LR inputs whose odd "
             f"rows are shifted by a seeded offset in ±{cfg.displacement.max_shift} LR px. Figure columns: LR "
             "(nearest) | bicubic | ours | HR; top row polar, bottom row Cartesian.",
             "Paper numbers: not available to this project (only the abstract); see README."]
    for c in claims:
        lines.append(f"Claim {c['claim']}: gap {c['gap_db']:+.2f} dB (sum of the two seed stds {c['std_sum_db']:.2f})"
                     f" -> {'held' if c['held'] else 'missed'}.")
    if room:
        lines.append("Headroom against the clean test images (PSNR): " + ", ".join(f"{k} {v:.2f} dB" for k, v in
                                                                             room.items()) + " (`headroom.py`).")
    if reg:
        lines.append("Registration on the synthetic set: " + ", ".join(f"{k}={v:.3f}" for k, v in reg.items()) + ".")
    return "\n\n".join(lines)


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, str, list[tuple[str, int, Config]], Config]:
    parser = reproduce_parser("PAMSR: train + evaluate the method, baselines and ablations on the same data")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (rows are averaged)")
    parser.add_argument("--folds", default=None,
                        help="comma-separated test folds (default: data.fold; with --all: every fold)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each in its own process with 1 thread")
    _, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=ROWS)
    config = args.config or DEFAULT_CONFIG
    base = [*args.overrides, *data_root_overrides(args.data_root), *([f"runs_root={args.out}"] if args.out else [])]
    if args.jobs > 1:
        base.append("runtime.threads=1")
    methods = args.only or [m for m, _ in VARIANTS + (EXTRA_VARIANTS if args.all else [])]
    base += ALL_OVERRIDES if args.all else []
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        cfg = load_config(Config, config, base, search_dirs=[PROJECT_DIR])
        folds = ([int(x) for x in args.folds.split(",") if x.strip()] if args.folds is not None
                 else list(range(cfg.data.n_folds)) if args.all else None)
        tasks = row_configs(config, base, methods, seeds, folds)
    except ValueError as exc:  # ConfigError is a ValueError, and so is a bad --seeds list
        parser.error(str(exc))
    return args, config, tasks, cfg


def main(argv: Sequence[str] | None = None) -> Path:
    args, config, tasks, cfg = parse(argv)
    tic = time.time()
    prepare_data(cfg)
    out = create_run_dir("pamsr", "reproduce", cfg, root=cfg.runs_root)

    def partial(done: list[dict]) -> None:
        write_comparison(aggregate(done), out.path, "PAMSR (partial: run in progress)",
                         notes="Rows so far (means over the seeds finished so far); the run continues.")

    per_seed, preds = run_all(tasks, args.jobs, partial)
    rows, claims = aggregate(per_seed), check_claims(aggregate(per_seed))
    write_table(per_seed, out.path / "per_seed.csv")
    if claims:
        write_table(claims, out.path / "claims.csv")
    first = tasks[0][2] if tasks else cfg  # the figure and the headroom are of the first run's test fold
    figures = crops_figure(first, preds, out.path)
    room = headroom(first)
    wall = (time.time() - tic) / 60
    write_comparison(rows, out.path, f"PAMSR x{cfg.data.scale}: method vs baselines and ablations", figures,
                     notes=notes(cfg, rows, claims, registration_check(cfg), config, wall, room))
    print((out.path / "comparison.md").read_text())
    print(f"reproduce finished in {wall:.1f} min: {out.path}")
    return out.path


if __name__ == "__main__":
    main()
