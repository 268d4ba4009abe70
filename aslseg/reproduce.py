"""ASLseg against its SSL baselines and the supervised bounds, with the same data, seeds and segmenter budget.

``python reproduce.py [--config configs/default.yaml] [--all] [--only aslseg,bcp] [--seeds 3] [--workers 2]``

Rows (``comparison.csv``, mean over seeds, ``_std`` = spread), by default the rows of the claims only (about
1,700 CPU-seconds for 3 seeds, estimated from the per-row cost; README): ``aslseg``; ``bcp`` trained for as
many iterations as ASLseg's segmenter over
all rounds (ASLseg's round 0 *is* this run's snapshot at the round-0 length, so the two share everything up to the
first selection); ``supervised_labeled`` (labelled volumes only). ``--all`` adds the reference rows
``mean_teacher``, ``sam_zero_shot_gtbox`` (pre-trained SAM, no target tuning, one ground-truth box per tumour
component: the upper bound of prompting) and ``supervised_full`` (every training volume labelled), ``ua_mt``,
``aslseg_lora``, ``aslseg_full`` (MedSAM's full fine-tuning of the tiny SAM), ``aslseg_no_sam`` (student/teacher
agreement instead of SAM), ``aslseg_no_adapter``, ``aslseg_no_selection``, ``aslseg_sam_random`` (randomly
initialised SAM), ``aslseg_rounds1``/``aslseg_rounds3``, ``aslseg_20pct`` (with ``bcp_20pct``) and
``aslseg_roi_none`` (with ``bcp_roi_none``). Sub-runs live in
``runs/aslseg/reproduce-<row>-s<seed>/``; the table, ``selection.csv``, ``rounds.csv`` and figures in
``runs/aslseg/reproduce/<time>/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from aslseg.settings import Config
from common.config import to_dict

__all__ = ["ROWS", "ALL_ROWS", "row_overrides", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
# the default: the rows of the claims (ASLseg vs BCP and vs the labelled-only segmenter), 3 seeds, sized to about
# 1,700 CPU-seconds estimated from the cost per row (README "Reproduction cost"); the reference rows go to --all
ROWS = ("aslseg", "bcp", "supervised_labeled")
ALL_ROWS = ROWS + ("mean_teacher", "sam_zero_shot_gtbox", "supervised_full", "ua_mt", "aslseg_lora",
                   "aslseg_full", "aslseg_no_sam", "aslseg_no_adapter", "aslseg_no_selection",
                   "aslseg_sam_random", "aslseg_rounds1", "aslseg_rounds3", "bcp_20pct", "aslseg_20pct",
                   "bcp_roi_none", "aslseg_roi_none")
_VARIANTS = {  # row -> (its equal-budget BCP row, extra overrides)
    "aslseg": ("bcp", []), "aslseg_lora": ("bcp", ["sam.finetune=lora", "sam.lr=5e-3"]),
    "aslseg_full": ("bcp", ["sam.finetune=full"]),
    "aslseg_no_sam": ("bcp", ["loop.refiner=teacher"]), "aslseg_no_adapter": ("bcp", ["loop.refiner=sam_raw"]),
    "aslseg_no_selection": ("bcp", ["selection.mode=all"]), "aslseg_sam_random": ("bcp", ["sam.checkpoint=none"]),
    "aslseg_rounds1": ("bcp", ["loop.rounds=1"]), "aslseg_rounds3": ("bcp", ["loop.rounds=3"]),
    "aslseg_20pct": ("bcp_20pct", ["data.labelled_fraction=0.2"]),
    "aslseg_roi_none": ("bcp_roi_none", ["data.roi=none"]),
}


def _budget(cfg: Config, rounds: int) -> int:
    return cfg.ssl.self_iters + rounds * cfg.loop.retrain_iters


def row_overrides(row: str, cfg: Config, seed: int) -> list[str]:
    """The overrides of one sub-run (on top of the reproduce config)."""
    base = [f"seed={seed}", f"experiment=reproduce-{row}-s{seed}"]
    round0 = cfg.ssl.pretrain_iters + cfg.ssl.self_iters
    rounds = {"aslseg_rounds1": 1, "aslseg_rounds3": 3}.get(row, cfg.loop.rounds)
    ssl_row = ["method=ssl", f"ssl.self_iters={_budget(cfg, cfg.loop.rounds)}"]
    if row in ("bcp", "bcp_20pct", "bcp_roi_none"):
        extra = {"bcp_20pct": ["data.labelled_fraction=0.2"], "bcp_roi_none": ["data.roi=none"]}.get(row, [])
        return base + ssl_row + extra + [f"ssl.snapshot_iters=[{round0}]"]
    if row in ("mean_teacher", "ua_mt"):
        return base + ssl_row + [f"ssl.method={row}"]
    if row == "supervised_labeled":
        return base + ssl_row + ["ssl.method=supervised"]
    if row == "supervised_full":
        return base + ssl_row + ["ssl.method=supervised", "data.labelled_fraction=1.0"]
    if row == "sam_zero_shot_gtbox":
        return base + ["method=sam_zero_shot_gtbox"]
    if row in _VARIANTS:
        return base + ["method=aslseg", f"loop.rounds={rounds}"] + _VARIANTS[row][1]
    raise KeyError(row)


def _run_one(config_path: str, overrides: list[str]) -> dict:
    from aslseg import train

    result = train.main(["--config", config_path, *overrides])
    return {"run_dir": str(result.run_dir), "summary": result.summary, "rounds": result.rounds,
            "selection": result.selection}


def _pretrain_sam(config_path: str, overrides: list[str]) -> str:
    from aslseg import pretrain_sam

    return str(pretrain_sam.main(["--config", config_path, *overrides]))


def sam_caches(rows: Sequence[str], cfg: Config, config_path: str, common: list[str]) -> dict[Path, list[str]]:
    """The pre-trained tiny SAMs that ``rows`` will load: cache file -> the overrides of one row that needs it.
    Trained once, beside the first stage, so that parallel ASLseg runs do not each pre-train the same model."""
    from aslseg.sam_prior import cache_path
    from common.config import load_config

    caches: dict[Path, list[str]] = {}
    for row in rows:
        if row not in _VARIANTS:
            continue
        overrides = [*common, *row_overrides(row, cfg, 0)]
        row_cfg = load_config(Config, config_path, overrides, [PROJECT_DIR])
        if row_cfg.sam.arch == "tiny" and row_cfg.sam.checkpoint == "pretrained":
            caches.setdefault(cache_path(row_cfg.sam_pretrain, row_cfg.data.size, row_cfg.sam.mask_prompt),
                              overrides)
    return caches


def _snapshot(results: dict, row: str, seed: int, cfg: Config) -> str:
    bcp_row = _VARIANTS[row][0]
    run_dir = Path(results[(bcp_row, seed)]["run_dir"])
    return str(run_dir / "checkpoints" / f"ssl_{cfg.ssl.pretrain_iters + cfg.ssl.self_iters}.pt")


def _run_all(rows: list[str], seeds: list[int], cfg: Config, config_path: str, common: list[str],
             workers: int) -> dict:
    """First every non-ASLseg row (ASLseg rows need their BCP snapshot) and the tiny-SAM pre-training they need,
    then the ASLseg rows; ``workers`` processes."""
    needed = set(rows) | {_VARIANTS[r][0] for r in rows if r in _VARIANTS}
    first = [r for r in ALL_ROWS if r in needed and r not in _VARIANTS]
    second = [r for r in ALL_ROWS if r in rows and r in _VARIANTS]
    results: dict = {}
    # spawn, not fork: a parent that has already run autograd (tiny-SAM pre-training, a test) cannot fork workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pretraining = [pool.submit(_pretrain_sam, config_path, overrides)
                       for path, overrides in sam_caches(second, cfg, config_path, common).items()
                       if not path.is_file()]
        for stage in (first, second):
            jobs = {}
            for row in stage:
                for seed in seeds:
                    extra = [f"loop.round0={_snapshot(results, row, seed, cfg)}"] if row in _VARIANTS else []
                    jobs[(row, seed)] = pool.submit(_run_one, config_path,
                                                    [*common, *row_overrides(row, cfg, seed), *extra])
            results.update({k: f.result() for k, f in jobs.items()})
            for job in pretraining:  # done before the ASLseg rows, which load what it wrote
                job.result()
    return results


def _table(rows: list[str], seeds: list[int], results: dict) -> list[dict]:
    metrics = ["dice", "dice_std", "jaccard", "hd95_mm", "asd_mm", "dice_global", "n_iterations"]
    table = []
    for row in rows:
        summaries = [results[(row, s)]["summary"] for s in seeds]
        dice = [s["dice"] for s in summaries]
        entry = {"method": row}
        for m in metrics:
            if m == "dice_std":
                entry[m] = float(np.std(dice)) if len(dice) > 1 else float(summaries[0]["dice_std"])
            else:
                entry[m] = float(np.mean([s[m] for s in summaries]))
        entry["n_seeds"] = len(seeds)
        if row.startswith("aslseg"):
            true = [s["selected_true_dice"] for s in summaries if np.isfinite(s["selected_true_dice"])]
            entry["selected_true_dice"] = float(np.mean(true)) if true else float("nan")
            entry["n_selected"] = float(np.mean([s["n_selected"] for s in summaries]))
        table.append(entry)
    return table


def _figures(out: Path, table: list[dict], selection: pd.DataFrame) -> list[str]:
    from common.tracking import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["method"] for r in table]
    ax.bar(range(len(names)), [r["dice"] for r in table], yerr=[r["dice_std"] for r in table], capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_ylabel("tumour Dice (per volume)")
    save_figure(fig, out / "figures" / "dice_per_method.png")
    figs = ["figures/dice_per_method.png"]
    if len(selection):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key in ("n_selected_pos", "n_selected_neg"):
            ax.plot(selection.groupby("round")[key].mean(), marker="o", label=key)
        ax2 = ax.twinx()
        for key in ("selected_true_dice", "ssl_true_dice", "refined_true_dice"):
            ax2.plot(selection.groupby("round")[key].mean(), ls="--", marker="s", label=key)
        ax.set_xlabel("round")
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
        save_figure(fig, out / "figures" / "selection_per_round.png")
        figs.append("figures/selection_per_round.png")
    return figs


def main(argv: Sequence[str] | None = None) -> Path:
    from common.cli import parse_reproduce, reproduce_parser
    from common.rundir import create_run_dir
    from common.tracking import write_comparison

    parser = reproduce_parser("ASLseg vs BCP, mean teacher and the supervised bounds (same data, seeds, budget)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--workers", type=int, default=2, help="parallel sub-runs (each with runtime.threads=1)")
    cfg, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=ALL_ROWS)
    rows = args.only or list(ALL_ROWS if args.all else ROWS)
    seeds = list(range(args.seeds))
    config_path = str(Path(args.config or "configs/default.yaml"))
    common = [*args.overrides, "runtime.threads=1", "runtime.progress=false"]
    if args.data_root:
        common += [f"data.root={Path(args.data_root).resolve()}", "data.synthetic=false"]
    if args.out:
        common.append(f"runs_root={Path(args.out).resolve()}")
    start = time.time()
    results = _run_all(rows, seeds, cfg, config_path, common, args.workers)
    out = create_run_dir("aslseg", "reproduce", to_dict(cfg), root=args.out or cfg.runs_root).path
    table = _table(rows, seeds, results)
    selection = pd.DataFrame([{"row": r, "seed": s, **x} for (r, s), v in results.items() if r in rows
                              for x in v["selection"]])
    rounds = pd.DataFrame([{"row": r, "seed": s, **x} for (r, s), v in results.items() if r in rows
                           for x in v["rounds"]])
    selection.to_csv(out / "selection.csv", index=False)
    rounds.to_csv(out / "rounds.csv", index=False)
    figs = _figures(out, table, selection[selection["row"] == "aslseg"] if len(selection) else selection)
    minutes = (time.time() - start) / 60
    write_comparison(table, out, "ASLseg on the synthetic LiTS-format set (tumour, per volume)", figs,
                     notes=f"{len(seeds)} seed(s), {minutes:.1f} min; sub-runs: "
                           + ", ".join(sorted({Path(v['run_dir']).parent.name for v in results.values()})))
    print(pd.DataFrame(table).to_string(index=False))
    print(f"[aslseg] reproduce ({minutes:.1f} min) -> {out}")
    return out


if __name__ == "__main__":
    main()
