"""``make reproduce-fpt``: generate (or read) the data, preload, train FPT+, FPT and the baselines, evaluate, and
write ``runs/fpt_plus/reproduce/<timestamp>/comparison.{csv,md}`` plus figures (FPT+ paper Sec. IV; official README
table). Each method and seed is its own experiment, ``runs/fpt_plus/reproduce-<method>-s<seed>/<timestamp>/``.

Default (embedded, CPU): synthetic fine-grained grading data and a small LPM pre-trained on a synthetic texture
source domain (``pretrain_lpm.py``, built here when ``model.pretrained`` names its missing file). Rows
(``ROWS``): ``fpt_plus`` (its own ``optim.epochs``), ``fpt_plus_matched`` (FPT+ for the LPM rows' epochs),
``fpt``, ``side_only`` (side network at low resolution), ``side_only_hr`` (the same side network on the
full-resolution image, no LPM), ``linear_probe``, ``lora``, ``full_finetune``; ``--all`` adds ``vpt``, ``adapter``
and ``fpt_plus_random_lpm`` (FPT+ on the random-initialised LPM: readout vs transfer) and 3 seeds for every row.
Rows that back-propagate through the LPM train for ``optim.lpm_epochs`` with ``runtime.lpm_threads`` threads; every
row takes its learning rate and warm-up from ``optim.method_lr`` / ``optim.method_warmup_epochs``. Seeds: 3 for
``fpt_plus``, ``fpt_plus_matched``, ``lora``, ``side_only``, ``side_only_hr``, else 1 (``--seeds`` overrides).

    python reproduce.py [--config CFG] [--data-root DIR] [--all] [--only fpt_plus,side_only] [--out RUNS] [key=value]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import DEFAULT_CONFIG, parse_reproduce, reproduce_parser
from common.rundir import RunDir, check_writable, create_run_dir
from common.tracking import pyplot, save_figure, write_comparison
from fpt_plus import train
from fpt_plus.engine import pme, ppe
from fpt_plus.settings import Config, ModelConfig

__all__ = ["main", "OFFICIAL", "ROWS", "CORE_ROWS", "EXTRA_ROWS", "train_argv", "parse", "seeds_of"]

PROJECT = "fpt_plus"
PROJECT_DIR = Path(__file__).resolve().parent
ROWS: dict[str, tuple[str, ...]] = {  # row -> (method, extra overrides)
    "fpt_plus": ("fpt_plus",), "fpt_plus_matched": ("fpt_plus",), "fpt": ("fpt",), "side_only": ("side_only",),
    "side_only_hr": ("side_only_hr",), "linear_probe": ("linear_probe",), "lora": ("lora",),
    "full_finetune": ("full_finetune",), "vpt": ("vpt",), "adapter": ("adapter",),
    "fpt_plus_random_lpm": ("fpt_plus", "model.pretrained=none"),
}
CORE_ROWS = ("fpt_plus", "fpt_plus_matched", "fpt", "side_only", "side_only_hr", "linear_probe", "lora",
             "full_finetune")
EXTRA_ROWS = ("vpt", "adapter", "fpt_plus_random_lpm")
THREE_SEEDS = ("fpt_plus", "fpt_plus_matched", "lora", "side_only", "side_only_hr")
LPM_ROWS = ("fpt_plus_matched", "lora", "full_finetune", "vpt", "adapter")  # trained for optim.lpm_epochs
BACKPROP_LPM = ("lora", "full_finetune", "vpt", "adapter")  # on a CPU: runtime.lpm_threads threads
# official README (ViT-B, 8-dataset average): learnable %, memory, AUC (percent)
OFFICIAL = {"full_finetune": (100.0, 23128, 88.82), "vpt": (0.17, 20582, 83.68), "adapter": (2.03, 19360, 84.14),
            "lora": (0.68, 20970, 85.94), "fpt": (1.81, 1824, 86.40), "fpt_plus": (1.03, 736, 87.12)}


def _vitb_percent(method: str, num_classes: int) -> float:
    """Learnable % of ``method`` with the paper's ViT-B/16 at 512 (built on the meta device: no memory)."""
    from fpt_plus.models.factory import build_model, count_learnable, learnable_percent

    model = ModelConfig(method=method)
    with torch.device("meta"):
        n = count_learnable(build_model(model, num_classes, preloaded=True))
    return learnable_percent(method, n, model.lpm)


def _macro_roc(per_case: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Macro-averaged one-vs-rest ROC of the best checkpoint from ``eval/per_case.csv`` (softmax probabilities)."""
    import pandas as pd
    from sklearn.metrics import roc_curve

    frame = pd.read_csv(per_case)
    frame = frame[(frame["checkpoint"] == "best") & (frame["split"] == "test")]
    grid = np.linspace(0, 1, 201)
    curves = []
    for c, name in enumerate(classes):
        positives = frame["label"].to_numpy() == c
        if 0 < positives.sum() < len(frame):
            fpr, tpr, _ = roc_curve(positives, frame[f"prob_{name}"].to_numpy())
            curves.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(curves, axis=0) if curves else grid


def _figures(results: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    """Macro ROC of every method's first seed, and its training curves."""
    import pandas as pd

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for method, runs in results.items():
        first = runs[0]
        fpr, tpr = _macro_roc(Path(first["run_dir"]) / "eval" / "per_case.csv", first["classes"])
        ax.plot(fpr, tpr, label=f"{method} (AUC {first['test_best']['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (macro one-vs-rest)")
    ax.set_title("test ROC, best-validation checkpoint, first seed of each method")
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, out / "figures" / "roc_curves.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, runs in results.items():
        frame = pd.read_csv(Path(runs[0]["run_dir"]) / "metrics.csv")
        axes[0].plot(frame["step"], frame["train/loss"], label=method)
        if "val/auc" in frame:
            axes[1].plot(frame["step"], frame["val/auc"], label=method)
    axes[0].set_title("training loss")
    axes[1].set_title("validation AUC (logits, macro OvR)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    save_figure(fig, out / "figures" / "training_curves.png", dpi=110)
    return ["figures/roc_curves.png", "figures/training_curves.png"]


def _row(method: str, runs: list[dict[str, Any]], full_peak: float | None) -> dict[str, Any]:
    aucs = np.array([r["test_best"]["auc"] for r in runs])
    first = runs[0]
    official = OFFICIAL.get(method, (float("nan"), float("nan"), float("nan")))
    row: dict[str, Any] = {
        "method": method,
        "auc": float(aucs.mean()),
        "auc_std": float(aucs.std()) if len(aucs) > 1 else float("nan"),
        "auc_final": float(np.mean([r["test_final"]["auc"] for r in runs])),
        "auc_prob": float(np.mean([r["test_best"]["auc_prob"] for r in runs])),
        "accuracy": float(np.mean([r["test_best"]["accuracy"] for r in runs])),
        "f1_macro": float(np.mean([r["test_best"]["f1_macro"] for r in runs])),
        "qwk": float(np.mean([r["test_best"]["qwk"] for r in runs])),
        "kappa": float(np.mean([r["test_best"]["kappa"] for r in runs])),
        "seeds": len(runs),
        "epochs": first["epochs"],
        "learnable_params": first["learnable"],
        "learnable_percent": first["learnable_percent"],
        "learnable_percent_vitb": _vitb_percent(first["method"], len(first["classes"])),
        "learnable_percent_official": official[0],
        "peak_mib": first["peak_mib"],
        "memory_vs_full": first["peak_mib"] / full_peak if full_peak else float("nan"),
        "step_time_s": float(np.mean([r["step_time_s"] for r in runs])),
        "ppe": ppe(float(aucs.mean()), first["learnable_percent"] / 100.0),
        "pme": pme(float(aucs.mean()), first["peak_mib"], full_peak) if full_peak else float("nan"),
        "official_auc": official[2] / 100.0,
    }
    return row


def parse(argv: Sequence[str] | None) -> tuple[Config, Any]:
    parser = reproduce_parser("Reproduce the FPT+ comparison (all methods, one table).")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of every row (default: 3 for fpt_plus, fpt_plus_matched, lora, side_only, "
                             "side_only_hr and 1 for the others; 3 for all with --all)")
    argv = list(argv) if argv is not None else None
    base, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=tuple(ROWS))
    if args.out is not None:  # --out is the runs root of the sub-runs and of the comparison folder
        base.runs_root = str(args.out)
    return base, args


def seeds_of(row: str, args: Any) -> int:
    return args.seeds or (3 if args.all or row in THREE_SEEDS else 1)


def train_argv(args: Any, base: Config, row: str, seed: int, on_cpu: bool) -> list[str]:
    """The train.py command line of one row and seed: its own experiment; the LPM rows for ``optim.lpm_epochs``
    and, on a CPU, those back-propagating through the LPM with ``runtime.lpm_threads`` (0 = torch default)."""
    method, *extra = ROWS[row]
    argv = ["--config", args.config or DEFAULT_CONFIG, *(["--data-root", args.data_root] if args.data_root else []),
            *args.overrides, f"model.method={method}", *extra, f"experiment=reproduce-{row}-s{seed}",
            f"seed={seed}", f"runs_root={base.runs_root}"]
    if row in LPM_ROWS:
        argv.append(f"optim.epochs={base.optim.lpm_epochs or base.optim.epochs}")
    if row in BACKPROP_LPM and on_cpu:
        argv.append(f"runtime.threads={base.runtime.lpm_threads}")
    return argv


def ensure_pretrained_lpm(args: Any, base: Config) -> None:
    """Pre-train the LPM when ``model.pretrained`` names the missing file of the default recipe for this LPM."""
    from common.rundir import resolve_path
    from fpt_plus import pretrain_lpm
    from fpt_plus.pretraining import weights_path
    from fpt_plus.settings import PretrainConfig

    spec = base.model.pretrained
    if spec in ("none", "hub") or resolve_path(spec).is_file():
        return
    expected = weights_path(PretrainConfig(), base.model.lpm)
    if resolve_path(spec) != resolve_path(expected):
        raise SystemExit(f"model.pretrained={spec} does not exist, and it is not the pre-training recipe's file for "
                         f"this model.lpm ({expected}); point it at a weight file or at {expected}")
    pretrain_lpm.main(["--config", args.config or DEFAULT_CONFIG, *args.overrides])


def run_rows(args: Any, base: Config, rows: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    on_cpu = not torch.cuda.is_available() or base.runtime.device == "cpu"
    results: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        runs = []
        for seed in range(base.seed, base.seed + seeds_of(row, args)):
            t0 = time.perf_counter()
            result = train.main(train_argv(args, base, row, seed, on_cpu))
            result["wall_s"] = time.perf_counter() - t0
            print(f"== {row} seed {seed}: test auc {result['test_best']['auc']:.4f} "
                  f"({result['wall_s']:.0f} s)", flush=True)
            runs.append(result)
        results[row] = runs
    return results


def write_table(base: Config, results: dict[str, list[dict[str, Any]]], out: RunDir, config: str, wall: float
                ) -> Path:
    methods = list(results)
    full_peak = results["full_finetune"][0]["peak_mib"] if "full_finetune" in results else None
    rows = [_row(m, results[m], full_peak) for m in methods]
    on_cpu = not torch.cuda.is_available() or base.runtime.device == "cpu"
    notes = (f"Config `{config}` ({base.data.name}); LPM {base.model.lpm.embed_dim}-wide x {base.model.lpm.depth} "
             f"blocks at {base.model.lpm.img_size}^2, pretrained={base.model.pretrained}. `auc` = test AUC "
             f"(macro one-vs-rest on logits) of the best-validation checkpoint, `auc_final` of the last one; "
             f"`qwk` = quadratic kappa, `kappa` = unweighted; "
             f"`learnable_percent` is for this config's LPM, `learnable_percent_vitb` for the paper's ViT-B/16 at "
             f"512 and `learnable_percent_official` the official README's. `peak_mib`: "
             f"{results[methods[0]][0]['memory_method']} of one training step; `memory_vs_full` = ratio "
             f"to full fine-tuning in this run. Sub-runs: runs/fpt_plus/reproduce-<method>-s<seed>/. Wall time "
             f"{wall / 60:.1f} min on {'CUDA' if not on_cpu else f'CPU ({torch.get_num_threads()} threads)'}.")
    write_comparison(rows, out.path, "FPT+ reproduction: methods compared on the same data",
                     _figures(results, out.path), notes)
    return out.path


def main(argv: Sequence[str] | None = None) -> Path:
    base, args = parse(argv)
    rows = list(args.only or (CORE_ROWS + (EXTRA_ROWS if args.all else ())))
    check_writable(base.runs_root)
    out = create_run_dir(PROJECT, "reproduce", base, root=base.runs_root)
    start = time.perf_counter()
    ensure_pretrained_lpm(args, base)
    results: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # the table is rewritten after every row: a stopped run keeps the rows it finished
        results.update(run_rows(args, base, [row]))
        path = write_table(base, results, out, args.config or DEFAULT_CONFIG, time.perf_counter() - start)
    print((path / "comparison.md").read_text())
    print(f"comparison written to {path} (wall {(time.perf_counter() - start) / 60:.1f} min)")
    return path


if __name__ == "__main__":
    main()
