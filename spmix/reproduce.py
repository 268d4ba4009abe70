"""Reproduce the paper's comparison on the synthetic long-tailed set (or ISIC 2018 with --data-root).

SPMix and every baseline (CE, class-balanced re-sampling, re-weighting, balanced softmax, Mixup, CutMix,
SaliencyMix, CMO) run through the same train.py with the same budget and seeds. ``--all`` adds the extra rows:
``spmix_paco`` (the official PaCo training, two views: the most expensive row), the released code's label rule
(``spmix_instance``), uniform 50/50 token mixing without saliency (``spmix_uniform``, alpha = 0.5) and mixing
only half of the steps (``spmix_half``, spmix.prob = 0.5; the released code mixes every step).

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--seeds 3] [--jobs 2] [--all] [k=v ...]

Writes ``runs/spmix/reproduce/<timestamp>/comparison.{csv,md}`` plus ``figures/spmix_mixed_samples.png``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent
ROWS: dict[str, list[str]] = {
    "spmix": ["method=spmix"],
    "ce": ["method=ce"],
    "resampling": ["method=resampling"],
    "reweighting": ["method=reweighting"],
    "balanced_softmax": ["method=balanced_softmax"],
    "mixup": ["method=mixup"],
    "cutmix": ["method=cutmix"],
    "saliencymix": ["method=saliencymix"],
    "cmo": ["method=cmo"],
}
ABLATIONS: dict[str, list[str]] = {
    "spmix_paco": ["method=spmix", "loss.name=paco"],
    "spmix_instance": ["method=spmix", "spmix.dominant=instance"],
    "spmix_uniform": ["method=spmix", "spmix.alpha=0.5"],
    "spmix_half": ["method=spmix", "spmix.prob=0.5"],
}
METRICS = ("balanced_accuracy", "f1_macro", "tail_recall", "medium_recall", "head_recall", "accuracy", "auc")


def _run_one(argv: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    from spmix.train import main as train_main

    out = train_main(argv)
    return {"test": out["test"], "saliency": out["saliency"], "run_dir": str(out["run_dir"])}


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    """Per row: mean and std (over seeds) of each metric; headline first (balanced accuracy)."""
    rows = []
    for name, runs in results.items():
        row: dict = {"method": name}
        for metric in METRICS:
            vals = np.array([r["test"][metric] for r in runs], dtype=np.float64)
            row[metric] = float(np.nanmean(vals))
            row[f"{metric}_std"] = float(np.nanstd(vals))
        for cls in ("AKIEC", "VASC", "DF"):
            row[f"recall_{cls}"] = float(np.nanmean([r["test"][f"recall_{cls}"] for r in runs]))
        row["seeds"] = len(runs)
        rows.append(row)
    return rows


def mixed_samples_figure(cfg, prep, path: Path, n: int = 4, seed: int = 0) -> Path:
    """Tail (dominant) and head (context) images, their saliency maps, the SPMix ratio map and the pixel-space
    picture of the mix r*x_dom + (1-r)*x_ctx (for a hybrid backbone the same r mixes tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from spmix.data import CLASSES, ISIC_MEAN, ISIC_STD, ISICDataset, eval_transform
    from spmix.mixing import mix_pixels, mixing_ratio, patch_scores, ratio_map

    frame = prep.frame[prep.frame["subset"] == "train"].reset_index(drop=True)
    ds = ISICDataset(frame, [eval_transform(cfg.data.img_size, cfg.augment)], prep.data_root, prep.saliency_root)
    rng = np.random.default_rng(seed)
    labels = np.array(ds.labels)
    tail = [CLASSES.index(c) for c in cfg.eval.tail]
    dom_idx = rng.choice(np.flatnonzero(np.isin(labels, tail)), n, replace=False)
    ctx_idx = rng.choice(np.flatnonzero(labels == CLASSES.index(cfg.eval.head[0])), n, replace=False)
    dom = [ds[int(i)] for i in dom_idx]
    ctx = [ds[int(i)] for i in ctx_idx]
    x_dom, x_ctx = torch.stack([d["image"] for d in dom]), torch.stack([c["image"] for c in ctx])
    s_dom, s_ctx = torch.stack([d["sal"] for d in dom]), torch.stack([c["sal"] for c in ctx])
    p = cfg.saliency.patch
    r = mixing_ratio(patch_scores(s_dom, p, 0.0), patch_scores(s_ctx, p, 0.0), cfg.spmix.alpha)
    mixed = mix_pixels(x_dom, x_ctx, r, p)
    grid = (x_dom.shape[-2] // p, x_dom.shape[-1] // p)
    rmap = ratio_map(r, grid, p)

    def show(t):
        img = t.permute(1, 2, 0).numpy() * np.array(ISIC_STD) + np.array(ISIC_MEAN)
        return np.clip(img, 0, 1)

    cols = ["tail image (label)", "its saliency", "head image", "its saliency", "ratio r (0.5..alpha)", "mixed"]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.1 * len(cols), 2.1 * n))
    for i in range(n):
        panels = [show(x_dom[i]), s_dom[i, 0].numpy(), show(x_ctx[i]), s_ctx[i, 0].numpy(), rmap[i, 0].numpy(),
                  show(mixed[i])]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            kw = {"cmap": "magma", "vmin": 0.5, "vmax": cfg.spmix.alpha} if j == 4 else {"cmap": "gray"}
            ax.imshow(panel, **({} if panel.ndim == 3 else kw))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        axes[i, 0].set_ylabel(CLASSES[labels[dom_idx[i]]], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    from common.config import load_config
    from common.rundir import resolve_path
    from common.tracking import write_comparison
    from spmix.experiment import Config, validate
    from spmix.train import prepare_data

    parser = argparse.ArgumentParser(description="SPMix vs baselines: comparison table on one data set")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--data-root", default=None, help="data set root (default: the config's data.root)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes (one thread each)")
    parser.add_argument("--all", action="store_true", help="also run the ablations")
    parser.add_argument("--rows", nargs="*", default=None, help="subset of rows to run")
    parser.add_argument("--out", default=None, help="output folder (default runs/spmix/reproduce/<timestamp>)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(Config, args.config, [*overrides, "method=spmix"], search_dirs=[PROJECT_DIR])
    validate(cfg)
    prep = prepare_data(cfg)  # data, split and saliency once, before the parallel runs
    table = dict(ROWS)
    if args.all:
        table.update(ABLATIONS)
    if args.rows:
        unknown = [r for r in args.rows if r not in table]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {list(table)}")
        table = {k: v for k, v in table.items() if k in args.rows}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else resolve_path(cfg.runs_root) / "spmix" / "reproduce" / stamp
    config_path = str(resolve_path(args.config) if not Path(args.config).is_absolute() else args.config)
    if not Path(config_path).is_file():
        config_path = str(PROJECT_DIR / args.config)
    jobs = []
    for name, extra in table.items():
        for seed in range(args.seeds):
            jobs.append((name, ["--config", config_path, *overrides, *extra, f"seed={seed}",
                                f"experiment=reproduce-{stamp}-{name}-s{seed}"]))
    start = time.time()
    results: dict[str, list[dict]] = {name: [] for name in table}
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [(name, pool.submit(_run_one, job)) for name, job in jobs]
            for name, fut in futures:
                results[name].append(fut.result())
                print(f"[reproduce] {name}: done ({time.time() - start:.0f} s)", flush=True)
    else:
        for name, job in jobs:
            results[name].append(_run_one(job))
    rows = summarise(results)
    figure = mixed_samples_figure(cfg, prep, out_dir / "figures" / "spmix_mixed_samples.png")
    wall = time.time() - start
    notes = (f"Data: {prep.data_root} (split {cfg.data.split}); {args.seeds} seeds per row; test subset; metrics are "
             f"fractions, mean over seeds with `_std`. Saliency detector that ran: {cfg.saliency.resolved}. "
             f"Backbone {cfg.model.backbone} at {cfg.data.img_size} px, {cfg.optim.epochs} epochs, random init; "
             f"every row uses CE except reweighting / balanced_softmax (their loss) and spmix_paco (PaCo). "
             f"Wall time {wall / 60:.1f} min with {args.jobs} parallel jobs.")
    write_comparison(rows, out_dir, "SPMix vs long-tailed baselines", [str(figure.relative_to(out_dir))], notes)
    print((out_dir / "comparison.md").read_text())
    return out_dir


if __name__ == "__main__":
    main()
