"""Reproduce the paper's comparison on the synthetic long-tailed set (or ISIC 2018 with --data-root).

SPMix and every baseline (CE, class-balanced re-sampling, re-weighting, balanced softmax, Mixup, CutMix,
SaliencyMix, CMO, re-sampling + Mixup / CutMix, which separate the sampler from the mixing, and ``spmix_uniform``:
SPMix with the saliency replaced by uniform scores, i.e. r = 0.5 on every token) run through the same train.py
with the same budget; every row trains with CE except re-weighting / balanced softmax (their loss). The rows the
claims compare (spmix, ce, resampling, spmix_uniform) get ``--seeds`` seeds, the others one (``--all``: every row
``--seeds``). ``--all`` adds the extra rows: ``spmix_paco`` (the official PaCo training, two views: the most
expensive row), the released code's label rule (``spmix_instance``) and mixing only half of the steps
(``spmix_half``, spmix.prob = 0.5; the released code mixes every step).

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--seeds 3] [--jobs 2] [--all]
                        [--only spmix,ce] [--out RUNS_ROOT] [key=value ...]

Writes ``runs/spmix/reproduce/<timestamp>/comparison.{csv,md}`` (+ config.yaml, env.json,
``figures/spmix_mixed_samples.png``); the sub-runs go to ``runs/spmix/reproduce-<row>-s<seed>/<timestamp>/``.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from spmix.settings import Config

PROJECT_DIR = Path(__file__).resolve().parent
ROWS: dict[str, list[str]] = {
    "spmix": ["method=spmix", "loss.name=ce"],
    "ce": ["method=ce", "loss.name=ce"],
    "resampling": ["method=resampling", "loss.name=ce"],
    "reweighting": ["method=reweighting", "loss.name=ce"],
    "balanced_softmax": ["method=balanced_softmax", "loss.name=ce"],
    "mixup": ["method=mixup", "loss.name=ce"],
    "cutmix": ["method=cutmix", "loss.name=ce"],
    "saliencymix": ["method=saliencymix", "loss.name=ce"],
    "cmo": ["method=cmo", "loss.name=ce"],
    "resampling_mixup": ["method=resampling_mixup", "loss.name=ce"],
    "resampling_cutmix": ["method=resampling_cutmix", "loss.name=ce"],
    "spmix_uniform": ["method=spmix", "loss.name=ce", "spmix.alpha=0.5"],  # uniform scores: r = 0.5 everywhere
}
KEY_ROWS = ("spmix", "ce", "resampling", "spmix_uniform")   # --seeds seeds; the other rows 1 (all --seeds with --all)
ABLATIONS: dict[str, list[str]] = {
    "spmix_paco": ["method=spmix", "loss.name=paco"],
    "spmix_instance": ["method=spmix", "loss.name=ce", "spmix.dominant=instance"],
    "spmix_half": ["method=spmix", "loss.name=ce", "spmix.prob=0.5"],
}
METRICS = ("balanced_accuracy", "tail_recall", "head_recall", "f1_macro", "medium_recall", "accuracy", "auc",
           "train_tail_recall")
FINAL_METRICS = ("balanced_accuracy", "tail_recall")   # of the final weights, columns ``final_<metric>``


# The paper's claim on the default synthetic table (means over seeds): (row, metric, reference row, margin).
CLAIMS = (("spmix", "balanced_accuracy", "resampling", 0.03), ("spmix", "tail_recall", "resampling", 0.0),
          ("spmix", "balanced_accuracy", "spmix_uniform", 0.01))


def check_claims(rows: Sequence[dict]) -> list[str]:
    """One line per claim of :data:`CLAIMS`: ``held``/``missed`` with both means and stds, or ``not measured``
    when a row is absent from the table."""
    by_name = {r["method"]: r for r in rows}
    lines = []
    for name, metric, ref, margin in CLAIMS:
        claim = f"{name} >= {ref} + {margin:.2f} on {metric}"
        if name not in by_name or ref not in by_name:
            lines.append(f"{claim}: not measured (row missing)")
            continue
        a, b = by_name[name], by_name[ref]
        verdict = "held" if a[metric] >= b[metric] + margin else "missed"
        lines.append(f"{claim}: {verdict} ({a[metric]:.3f} ± {a[f'{metric}_std']:.3f}, {a['seeds']} seeds vs "
                     f"{b[metric]:.3f} ± {b[f'{metric}_std']:.3f}, {b['seeds']} seeds)")
    return lines


def run_one(argv: list[str]) -> dict:
    """One sub-run (in a worker process): train.py's main on ``argv``."""
    from spmix.train import main as train_main

    out = train_main(argv)
    return {"test": out["test"], "final": out["test_final"], "saliency": out["saliency"],
            "run_dir": str(out["run_dir"])}


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    """Per row: mean and std (over seeds) of each metric; headline first (balanced accuracy)."""
    rows = []
    for name, runs in results.items():
        row: dict = {"method": name}
        for metric in METRICS:
            vals = np.array([r["test"][metric] for r in runs], dtype=np.float64)
            row[metric] = float(np.nanmean(vals))
            row[f"{metric}_std"] = float(np.nanstd(vals))
        for metric in FINAL_METRICS:
            vals = np.array([r["final"][metric] for r in runs], dtype=np.float64)
            row[f"final_{metric}"] = float(np.nanmean(vals))
            row[f"final_{metric}_std"] = float(np.nanstd(vals))
        for cls in ("AKIEC", "VASC", "DF"):
            row[f"recall_{cls}"] = float(np.nanmean([r["test"][f"recall_{cls}"] for r in runs]))
        row["best_epoch"] = float(np.mean([r["test"]["epoch"] for r in runs]))
        row["seeds"] = len(runs)
        rows.append(row)
    return rows


def select_rows(args) -> dict[str, list[str]]:
    """The default table, ``--all`` adds the ablations, ``--only`` keeps the named rows (in table order)."""
    table = {**ROWS, **ABLATIONS} if args.all or args.only else dict(ROWS)
    return {k: v for k, v in table.items() if not args.only or k in args.only}


def row_seeds(name: str, args) -> int:
    """Seeds of one row: ``--seeds`` for the rows the claims compare (:data:`KEY_ROWS`) and under ``--all``, else 1."""
    return args.seeds if args.all or name in KEY_ROWS else 1


def prepare_once(cfg: Config, seeds: int):
    """Data, split files and saliency maps of every seed, in this process, before the parallel runs write
    anything (so they never race on the same file). Returns the seed-0 preparation (for the figure)."""
    from spmix.pipeline import prepare_data

    preps = [prepare_data(replace(cfg, seed=s, method="spmix")) for s in range(seeds)]
    return preps[0]


def config_file(name: str) -> str:
    """Absolute path of the config the sub-runs load (relative to the working directory or the project)."""
    path = Path(name)
    return str(path.resolve() if path.is_file() else PROJECT_DIR / name)


def run_jobs(jobs: list[tuple[str, list[str]]], rows: Sequence[str], workers: int) -> dict[str, list[dict]]:
    start = time.time()
    results: dict[str, list[dict]] = {name: [] for name in rows}
    if workers <= 1:
        for name, job in jobs:
            results[name].append(run_one(job))
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [(name, pool.submit(run_one, job)) for name, job in jobs]
        for name, fut in futures:
            results[name].append(fut.result())
            print(f"[reproduce] {name}: done ({time.time() - start:.0f} s)", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> Path:
    from common.cli import DEFAULT_CONFIG, data_root_overrides, parse_reproduce, reproduce_parser
    from common.rundir import check_writable, create_run_dir, resolve_path
    from common.tracking import write_comparison
    from spmix.reports import mixed_samples_figure

    parser = reproduce_parser("SPMix vs baselines: comparison table on one data set")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds (0, 1, ...) of spmix, ce, resampling, spmix_uniform; other rows 1 (--all: all)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes (runtime.threads each)")
    cfg, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=[*ROWS, *ABLATIONS])
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    runs_root = str(resolve_path(args.out or cfg.runs_root))
    check_writable(runs_root, key="--out" if args.out else "runs_root")
    cfg = replace(cfg, runs_root=runs_root)
    prep = prepare_once(cfg, args.seeds)
    table = select_rows(args)
    base = ["--config", config_file(args.config or DEFAULT_CONFIG), *args.overrides,
            *data_root_overrides(args.data_root), f"runs_root={runs_root}"]
    jobs = [(name, [*base, *extra, f"seed={seed}", f"experiment=reproduce-{name}-s{seed}"])
            for name, extra in table.items() for seed in range(row_seeds(name, args))]
    out = create_run_dir("spmix", "reproduce", cfg, root=runs_root)
    start = time.time()
    rows = summarise(run_jobs(jobs, list(table), args.jobs))
    figure = mixed_samples_figure(cfg, prep, out.figures / "spmix_mixed_samples.png")
    notes = (f"Data: {prep.data_root} (split {cfg.data.split}); seeds per row in column `seeds`; test subset, "
             f"best.pt (`final_*`: the final weights; `train_tail_recall`: best.pt on its training images); metrics "
             f"are fractions, mean over seeds with `_std` (population std). "
             f"Saliency detector that ran: {cfg.saliency.resolved}. "
             f"Backbone {cfg.model.backbone} at {cfg.data.img_size} px, {cfg.optim.epochs} epochs, random init; "
             f"every row uses CE except reweighting / balanced_softmax (their loss) and spmix_paco (PaCo). "
             f"Sub-runs: {runs_root}/spmix/reproduce-<row>-s<seed>/. "
             f"Wall time {(time.time() - start) / 60:.1f} min with {args.jobs} parallel jobs.\n\nClaims:\n"
             + "\n".join(f"- {line}" for line in check_claims(rows)))
    write_comparison(rows, out.path, "SPMix vs long-tailed baselines", [str(figure.relative_to(out.path))], notes)
    print((out.path / "comparison.md").read_text())
    return out.path


if __name__ == "__main__":
    main()
