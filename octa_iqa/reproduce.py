"""Reproduce the UNO-QA comparison: train on outstanding images only, score, threshold, cluster, evaluate, and
compare with PaDiM, PatchCore, k-means on raw features and two supervised references, over several seeds.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [--only ROW,ROW] [--seeds N]
                        [--pretrained FILE] [key=value ...]

Rows: ``uno_qa`` (trained adaptors + memory bank + tau + test-time clustering), ``uno_qa_two_threshold`` (UNO-QA's
score with the baselines' second threshold instead of clustering), ``padim``, ``patchcore``,
``kmeans_raw_transductive``, ``supervised`` and ``handcrafted_logreg``. ``--all`` adds ``uno_qa_patch_only``
(s(x) without the image-level term), ``uno_qa_no_head`` (untrained adaptors), ``uno_qa_random_backbone`` (no
self-supervised pre-training), ``uno_qa_kmeans`` and ``uno_qa_tsne`` (clustering options). ``--pretrained FILE``
(ImageNet weights of ``model.backbone``) adds ``uno_qa_pretrained``. Each row is run for ``--seeds`` seeds
(``seed``, ``seed + 1``, ...; the data stay the same): the table holds the mean, ``<metric>_std`` (sample standard
deviation) and ``seeds``. The UNO-QA model is trained for every selection: the anomaly baselines read its frozen
backbone. Training runs go to ``runs/octa_iqa/reproduce-<row>-s<seed>/<timestamp>/``, the table to
``runs/octa_iqa/reproduce/<timestamp>/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.cli import parse_reproduce, reproduce_parser
from common.config import apply_overrides, from_dict, to_dict
from common.rundir import RunDir, create_run_dir
from common.runtime import dist_info, setup_runtime
from common.tracking import plot_confusion_matrix, write_comparison
from octa_iqa import baselines
from octa_iqa.assessment import example_grid, plot_embedding, plot_score_histograms, quality_metrics
from octa_iqa.data import load_image, split_outstanding
from octa_iqa.eval import Assessment, assess, load_trained, score_records
from octa_iqa.pipeline import PreparedData, prepare_data
from octa_iqa.settings import CLASS_NAMES, Config
from octa_iqa.train import PROJECT_DIR, run_training

__all__ = ["METRIC_COLUMNS", "ROWS", "ALL_ROWS", "aggregate_seeds", "claim_checks", "main"]

METRIC_COLUMNS = ("balanced_accuracy", "qwk", "auroc", "auroc_ungradable_vs_gradable", "ari", "f1_macro", "accuracy",
                  "kappa", "f1_ungradable", "f1_gradable", "f1_outstanding")
ROWS = ("uno_qa", "uno_qa_two_threshold", "padim", "patchcore", "kmeans_raw_transductive", "supervised",
        "handcrafted_logreg")
ALL_ROWS = ("uno_qa_patch_only", "uno_qa_no_head", "uno_qa_random_backbone", "uno_qa_kmeans", "uno_qa_tsne")
VARIANTS = {"uno_qa_no_head": ["model.train_head=false"], "uno_qa_random_backbone": ["model.pretrained=none"]}
CLUSTER_OPTIONS = {"uno_qa_patch_only": ["threshold.image_weight=0"], "uno_qa_kmeans": ["cluster.method=kmeans"],
                   "uno_qa_tsne": ["cluster.reduce=tsne"]}

COIPS_NOTE = ("Supervised reference on the real sOCTA-3x3-10k test split (COIPS README, not UNO-QA; Acc / Pre / AUC / "
              "F1 in %): Swin-T-Large 91.18 / 91.82 / 0.98 / 91.26, Inception-V3 89.18 / 89.69 / 0.97 / 89.23, "
              "ResNet-101 84.91 / 85.38 / 0.90 / 84.80. UNO-QA's own tables are not available to this project.")


@dataclass
class UnoResult:
    model: torch.nn.Module
    checkpoint: Path
    scores: np.ndarray
    assessment: Assessment
    metrics: dict


def _row(method: str, metrics: dict, minutes: float) -> dict:
    return {"method": method, **{k: metrics[k] for k in METRIC_COLUMNS}, "minutes": minutes}


def sub_config(cfg: Config, row: str, overrides: Sequence[str] = (), runs_root: str | None = None) -> Config:
    """The config of one comparison row: ``experiment = reproduce-<row>-s<seed>``, its own overrides."""
    extra = [f"experiment=reproduce-{row}-s{cfg.seed}", *overrides] + ([f"runs_root={runs_root}"] if runs_root else [])
    return from_dict(Config, apply_overrides(to_dict(cfg), extra))


def assess_checkpoint(cfg: Config, checkpoint: Path, data: PreparedData, device: torch.device) -> UnoResult:
    model, holdout = load_trained(cfg, checkpoint, device)
    scored = score_records(model, data.test, cfg, device)
    result = assess(scored, holdout, cfg)
    y = np.array([r.label for r in data.test])
    return UnoResult(model, checkpoint, scored.scores, result, quality_metrics(y, result.pred, scored.scores))


def train_and_assess(cfg: Config, data: PreparedData, device: torch.device) -> UnoResult:
    run = run_training(cfg, data=data)
    return assess_checkpoint(cfg, run / "checkpoints" / "best.pt", data, device)


def uno_figures(uno: UnoResult, cfg: Config, data: PreparedData, out: RunDir) -> None:
    y = np.array([r.label for r in data.test])
    result = uno.assessment
    plot_score_histograms(uno.scores, y, [result.tau], out.figures / "score_hist_uno_qa.png")
    plot_embedding(result.cluster.embedding, result.cluster.labels, y[result.non_outstanding],
                   out.figures / "embedding_uno_qa.png")
    images = [load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in data.test]
    example_grid(images, result.pred, y, out.figures / "examples_uno_qa.png")
    plot_confusion_matrix(uno.metrics["confusion_matrix"], CLASS_NAMES, out.figures / "confusion_uno_qa.png")


def baseline_rows(cfg: Config, data: PreparedData, uno: UnoResult, device: torch.device, out: RunDir | None,
                  wanted: Callable[[str], bool]) -> list[dict]:
    """Anomaly baselines on UNO-QA's frozen backbone and the same outstanding images, then the supervised rows."""
    y = np.array([r.label for r in data.test])
    rows = []
    if wanted("uno_qa_two_threshold"):
        two = baselines.two_threshold_labels(uno.scores, uno.assessment.tau, cfg.baselines.second_split, cfg.seed)
        rows.append(_row("uno_qa_two_threshold", quality_metrics(y, two, uno.scores), 0.0))
    fit, hold = split_outstanding(data.train, cfg.data.holdout_fraction, cfg.data.split_seed)
    feats = {name: baselines.backbone_features(uno.model.backbone, recs, cfg, device)
             for name, recs in (("fit", fit), ("hold", hold), ("test", data.test))}
    runs = {"padim": lambda: baselines.padim(feats["fit"], feats["hold"], feats["test"], cfg),
            "patchcore": lambda: baselines.patchcore(feats["fit"], feats["hold"], feats["test"], cfg),
            "kmeans_raw_transductive": lambda: baselines.kmeans_raw_transductive(feats["fit"], feats["test"], cfg),
            "supervised": lambda: baselines.supervised(uno.model.backbone.state_dict(), data.train, data.test, cfg,
                                                       device),
            "handcrafted_logreg": lambda: baselines.handcrafted_logreg(data.train, data.test, cfg)}
    for name, fn in runs.items():
        if not wanted(name):
            continue
        t0 = time.time()
        print(f"== {name} (seed {cfg.seed})", flush=True)
        res = fn()
        rows.append(_row(name, quality_metrics(y, res.pred, res.score, res.ug_score), (time.time() - t0) / 60))
        if name == "patchcore" and out is not None:
            plot_score_histograms(res.score, y, [res.tau], out.figures / "score_hist_patchcore.png",
                                  "PatchCore image score")
    return rows


def option_rows(cfg: Config, data: PreparedData, uno: UnoResult, device: torch.device, variants: dict,
                cluster_options: dict, runs_root: str | None) -> list[dict]:
    """Re-trained variants (their own runs) and score / clustering options on UNO-QA's model (no re-training)."""
    rows = []
    for name, extra in variants.items():
        t0 = time.time()
        print(f"== {name}: {' '.join(extra)} (seed {cfg.seed})", flush=True)
        variant = train_and_assess(sub_config(cfg, name, extra, runs_root), data, device)
        rows.append(_row(name, variant.metrics, (time.time() - t0) / 60))
    for name, extra in cluster_options.items():
        option = assess_checkpoint(sub_config(cfg, name, extra), uno.checkpoint, data, device)
        rows.append(_row(name, option.metrics, 0.0))
    return rows


def aggregate_seeds(rows: Sequence[dict]) -> list[dict]:
    """Per-seed rows (several per method) -> one row per method (first-seen order): mean of every metric and of
    ``minutes``, ``<metric>_std`` (sample std; 0 for one seed) and ``seeds``."""
    frame = pd.DataFrame(list(rows))
    out = []
    for method in dict.fromkeys(frame["method"]):
        part = frame[frame["method"] == method]
        row: dict = {"method": method}
        for key in METRIC_COLUMNS:
            values = part[key].astype(float)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["minutes"] = float(part["minutes"].mean())
        row["seeds"] = len(part)
        out.append(row)
    return out


def claim_checks(table: Sequence[dict]) -> list[str]:
    """The paper's claims on balanced accuracy (mean over seeds): held / missed with the numbers."""
    bal = {r["method"]: r["balanced_accuracy"] for r in table}
    if "uno_qa" not in bal:
        return []
    uno = bal["uno_qa"]
    checks = [("UNO-QA >= 0.65", uno >= 0.65, f"{uno:.3f}")]
    if "uno_qa_two_threshold" in bal:
        two = bal["uno_qa_two_threshold"]
        checks.append(("clustering >= two-threshold + 0.02", uno >= two + 0.02, f"{uno:.3f} vs {two:.3f}"))
    for name in ("patchcore", "padim"):
        if name in bal:
            checks.append((f"UNO-QA >= {name}", uno >= bal[name], f"{uno:.3f} vs {bal[name]:.3f}"))
    return [f"{claim}: {'held' if ok else 'MISSED'} ({numbers})" for claim, ok, numbers in checks]


def write_table(table: list[dict], cfg: Config, data: PreparedData, uno: UnoResult, out: RunDir, minutes: float,
                device: torch.device, seeds: Sequence[int], cpu_seconds: float = float("nan")) -> None:
    fit, hold = split_outstanding(data.train, cfg.data.holdout_fraction, cfg.data.split_seed)
    cm = "; ".join(f"{CLASS_NAMES[i]}: {list(map(int, uno.metrics['confusion_matrix'][i]))}" for i in range(3))
    checks = claim_checks(table)
    notes = "\n\n".join([
        f"Data: `{cfg.data.root}` ({cfg.data.format}); train {len(data.train)} images, of which the {len(fit)} + "
        f"{len(hold)} outstanding ones (fit + held-out) are all UNO-QA and the anomaly baselines see; test "
        f"{len(data.test)}. Backbone `{cfg.model.backbone}` ({cfg.model.pretrained}); seeds {list(seeds)} (mean, "
        f"`_std` = sample std over seeds); wall time {minutes:.1f} min on {device} ({cpu_seconds:.0f} CPU-s of this "
        f"process, {torch.get_num_threads()} intra-op threads).",
        "Metrics: balanced_accuracy (headline), qwk (quadratic kappa); auroc = outstanding vs rest from the score "
        "(supervised rows: 1 - p(outstanding)); auroc_ungradable_vs_gradable within the truly non-outstanding "
        "images; ari = adjusted Rand index of the gradable/ungradable split on images truly and predicted "
        "non-outstanding. tau = 95th percentile of held-out outstanding scores.",
        "Claims (mean over seeds): " + "; ".join(checks) + "." if checks else "",
        f"UNO-QA confusion matrix, seed {seeds[0]} (rows = truth: predicted ungradable, gradable, outstanding): {cm}.",
        COIPS_NOTE,
    ])
    figures = [f"figures/{p.name}" for p in sorted(out.figures.glob("*.png"))]
    title = ("UNO-QA vs baselines (synthetic sOCTA-3x3 stand-in)" if cfg.data.synthetic
             else f"UNO-QA vs baselines ({cfg.data.root})")
    write_comparison(table, out.path, title, figures, notes)
    for row in table:
        print(f"{row['method']:26s} " + " ".join(f"{k}={row[k]:.3f}±{row[k + '_std']:.3f}"
                                                 for k in METRIC_COLUMNS[:5]), flush=True)
    for line in checks:
        print(f"[claim] {line}", flush=True)


def seed_rows(cfg: Config, data: PreparedData, device: torch.device, out: RunDir | None,
              wanted: Callable[[str], bool], variants: dict, cluster_options: dict, runs_root: str | None
              ) -> tuple[list[dict], UnoResult]:
    """Every selected row for one seed (``cfg.seed``); figures of the first seed when ``out`` is given."""
    tic = time.time()
    print(f"== uno_qa (seed {cfg.seed}): training on outstanding images only", flush=True)
    uno = train_and_assess(sub_config(cfg, "uno_qa", runs_root=runs_root), data, device)
    if out is not None:
        uno_figures(uno, cfg, data, out)
    rows = [_row("uno_qa", uno.metrics, (time.time() - tic) / 60)] if wanted("uno_qa") else []
    rows += baseline_rows(cfg, data, uno, device, out, wanted)
    rows += option_rows(cfg, data, uno, device, variants, cluster_options, runs_root)
    return rows, uno


def run_reproduce(cfg: Config, wanted: Callable[[str], bool], variants: dict, cluster_options: dict,
                  runs_root: str | None = None, n_seeds: int = 3) -> Path:
    tic, cpu = time.time(), time.process_time()
    device = setup_runtime(cfg.runtime, cfg.seed)
    data = prepare_data(cfg)  # every image of every split checked once, before any run folder exists
    out = create_run_dir("octa_iqa", "reproduce", cfg, root=runs_root or cfg.runs_root, device=device)
    seeds = [cfg.seed + i for i in range(n_seeds)]
    rows, first = [], None
    for i, seed in enumerate(seeds):
        seed_cfg = from_dict(Config, apply_overrides(to_dict(cfg), [f"seed={seed}"]))
        skip = {"supervised"} if i >= cfg.baselines.supervised_seeds else set()

        def wanted_now(row: str, skip: set = skip) -> bool:
            return wanted(row) and row not in skip

        got, uno = seed_rows(seed_cfg, data, device, out if i == 0 else None, wanted_now, variants, cluster_options,
                             runs_root)
        rows += got
        first = first or uno
    pd.DataFrame(rows).to_csv(out.path / "per_seed.csv", index=False)
    minutes, cpu = (time.time() - tic) / 60, time.process_time() - cpu
    write_table(aggregate_seeds(rows), cfg, data, first, out, minutes, device, seeds, cpu)
    print(f"[reproduce] {out.path} ({minutes:.1f} min, {cpu:.0f} CPU-s)", flush=True)
    return out.path


def refuse_torchrun() -> None:
    """Only train.py has a torchrun path; the comparison runs in one process."""
    if dist_info().distributed:
        raise SystemExit("octa_iqa: the comparison runs in one process (only train.py has a torchrun path); "
                         "run it with python, not torchrun")


def main(argv: Sequence[str] | None = None) -> Path:
    refuse_torchrun()
    parser = reproduce_parser("UNO-QA: train + evaluate the method and its baselines")
    parser.add_argument("--pretrained", default=None, help="ImageNet weight file of model.backbone: adds a row")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (seed, seed + 1, ...); default 3")
    cfg, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=(*ROWS, *ALL_ROWS, "uno_qa_pretrained"))
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    selected = set(args.only) if args.only else set(ROWS) | (set(ALL_ROWS) if args.all else set())
    variants = {k: v for k, v in VARIANTS.items() if k in selected}
    if args.pretrained:
        variants["uno_qa_pretrained"] = [f"model.pretrained={args.pretrained}"]
    options = {k: v for k, v in CLUSTER_OPTIONS.items() if k in selected}
    return run_reproduce(cfg, selected.__contains__, variants, options, args.out, args.seeds)


if __name__ == "__main__":
    main()
