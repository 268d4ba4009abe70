"""Reproduce the UNO-QA comparison: train on outstanding images only, score, threshold, cluster, evaluate, and
compare with PaDiM, PatchCore, k-means on raw features and the supervised upper bound.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [--only ROW,ROW]
                        [--pretrained FILE] [key=value ...]

Rows: ``uno_qa`` (trained adaptors + memory bank + tau + test-time clustering), ``uno_qa_two_threshold`` (UNO-QA's
score with the baselines' second threshold instead of clustering), ``padim``, ``patchcore``, ``kmeans_raw`` and
``supervised``. ``--all`` adds ``uno_qa_no_head`` (untrained adaptors), ``uno_qa_random_backbone`` (no
self-supervised pre-training), ``uno_qa_gmm`` and ``uno_qa_tsne`` (clustering options). ``--pretrained FILE``
(ImageNet weights of ``model.backbone``) adds ``uno_qa_pretrained``. The UNO-QA model is trained for every
selection: the anomaly baselines read its frozen backbone. Training runs go to
``runs/octa_iqa/reproduce-<row>-s<seed>/<timestamp>/``, the table to ``runs/octa_iqa/reproduce/<timestamp>/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.cli import parse_reproduce, reproduce_parser
from common.config import apply_overrides, from_dict, to_dict
from common.rundir import RunDir, create_run_dir
from common.runtime import setup_runtime
from common.tracking import plot_confusion_matrix, write_comparison
from octa_iqa import baselines
from octa_iqa.assessment import example_grid, plot_embedding, plot_score_histograms, quality_metrics
from octa_iqa.data import load_image, split_outstanding
from octa_iqa.eval import Assessment, assess, load_trained, score_records
from octa_iqa.pipeline import PreparedData, prepare_data
from octa_iqa.settings import CLASS_NAMES, Config
from octa_iqa.train import PROJECT_DIR, run_training

__all__ = ["METRIC_COLUMNS", "ROWS", "ALL_ROWS", "main"]

METRIC_COLUMNS = ("balanced_accuracy", "qwk", "f1_macro", "auroc", "accuracy", "kappa",
                  "f1_ungradable", "f1_gradable", "f1_outstanding", "auroc_ungradable_vs_gradable", "ari")
ROWS = ("uno_qa", "uno_qa_two_threshold", "padim", "patchcore", "kmeans_raw", "supervised")
ALL_ROWS = ("uno_qa_no_head", "uno_qa_random_backbone", "uno_qa_gmm", "uno_qa_tsne")
VARIANTS = {"uno_qa_no_head": ["model.train_head=false"], "uno_qa_random_backbone": ["model.pretrained=none"]}
CLUSTER_OPTIONS = {"uno_qa_gmm": ["cluster.method=gmm"], "uno_qa_tsne": ["cluster.reduce=tsne"]}

COIPS_NOTE = ("Supervised reference on the real sOCTA-3x3-10k test split (COIPS README, not UNO-QA; Acc / Pre / AUC / "
              "F1 in %): Swin-T-Large 91.18 / 91.82 / 0.98 / 91.26, Inception-V3 89.18 / 89.69 / 0.97 / 89.23, "
              "ResNet-101 84.91 / 85.38 / 0.90 / 84.80. UNO-QA's own tables are not available to this project.")


@dataclass
class UnoResult:
    model: torch.nn.Module
    holdout: np.ndarray
    scores: np.ndarray
    assessment: Assessment
    metrics: dict


def _row(method: str, metrics: dict, minutes: float) -> dict:
    return {"method": method, **{k: metrics[k] for k in METRIC_COLUMNS}, "minutes": minutes}


def sub_config(cfg: Config, row: str, overrides: Sequence[str] = (), runs_root: str | None = None) -> Config:
    """The config of one comparison row: ``experiment = reproduce-<row>-s<seed>``, its own overrides."""
    extra = [f"experiment=reproduce-{row}-s{cfg.seed}", *overrides] + ([f"runs_root={runs_root}"] if runs_root else [])
    return from_dict(Config, apply_overrides(to_dict(cfg), extra))


def train_and_assess(cfg: Config, data: PreparedData, device: torch.device) -> UnoResult:
    run = run_training(cfg)
    model, holdout = load_trained(cfg, run / "checkpoints" / "best.pt", device)
    scored = score_records(model, data.test, cfg, device)
    result = assess(scored, holdout, cfg)
    y = np.array([r.label for r in data.test])
    return UnoResult(model, holdout, scored.scores, result, quality_metrics(y, result.pred, scored.scores))


def uno_figures(uno: UnoResult, cfg: Config, data: PreparedData, out: RunDir) -> None:
    y = np.array([r.label for r in data.test])
    result = uno.assessment
    plot_score_histograms(uno.scores, y, [result.tau], out.figures / "score_hist_uno_qa.png")
    plot_embedding(result.cluster.embedding, result.cluster.labels, y[result.non_outstanding],
                   out.figures / "embedding_uno_qa.png")
    images = [load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in data.test]
    example_grid(images, result.pred, y, out.figures / "examples_uno_qa.png")
    plot_confusion_matrix(uno.metrics["confusion_matrix"], CLASS_NAMES, out.figures / "confusion_uno_qa.png")


def baseline_rows(cfg: Config, data: PreparedData, uno: UnoResult, device: torch.device, out: RunDir,
                  wanted: Callable[[str], bool]) -> list[dict]:
    """Anomaly baselines on UNO-QA's frozen backbone and the same outstanding images, then the supervised bound."""
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
            "kmeans_raw": lambda: baselines.kmeans_raw(feats["fit"], feats["test"], cfg),
            "supervised": lambda: baselines.supervised(uno.model.backbone.state_dict(), data.train, data.test, cfg,
                                                       device)}
    for name, fn in runs.items():
        if not wanted(name):
            continue
        t0 = time.time()
        print(f"== {name}", flush=True)
        res = fn()
        rows.append(_row(name, quality_metrics(y, res.pred, res.score, res.ug_score), (time.time() - t0) / 60))
        if name == "patchcore":
            plot_score_histograms(res.score, y, [res.tau], out.figures / "score_hist_patchcore.png",
                                  "PatchCore image score")
    return rows


def option_rows(cfg: Config, data: PreparedData, uno: UnoResult, device: torch.device, variants: dict,
                cluster_options: dict, runs_root: str | None) -> list[dict]:
    """Re-trained variants (their own runs) and clustering options on UNO-QA's scores (no re-training)."""
    rows = []
    for name, extra in variants.items():
        t0 = time.time()
        print(f"== {name}: {' '.join(extra)}", flush=True)
        variant = train_and_assess(sub_config(cfg, name, extra, runs_root), data, device)
        rows.append(_row(name, variant.metrics, (time.time() - t0) / 60))
    y = np.array([r.label for r in data.test])
    scored = score_records(uno.model, data.test, cfg, device)
    for name, extra in cluster_options.items():
        result = assess(scored, uno.holdout, sub_config(cfg, name, extra))
        rows.append(_row(name, quality_metrics(y, result.pred, scored.scores), 0.0))
    return rows


def write_table(rows: list[dict], cfg: Config, data: PreparedData, uno: UnoResult, out: RunDir, minutes: float,
                device: torch.device) -> None:
    fit, hold = split_outstanding(data.train, cfg.data.holdout_fraction, cfg.data.split_seed)
    cm = "; ".join(f"{CLASS_NAMES[i]}: {list(map(int, uno.metrics['confusion_matrix'][i]))}" for i in range(3))
    notes = "\n\n".join([
        f"Data: `{cfg.data.root}` ({cfg.data.format}); train {len(data.train)} images, of which the {len(fit)} + "
        f"{len(hold)} outstanding ones (fit + held-out) are all UNO-QA and the anomaly baselines see; test "
        f"{len(data.test)}. Backbone `{cfg.model.backbone}` ({cfg.model.pretrained}); wall time {minutes:.1f} min "
        f"on {device}.",
        "Metrics: balanced_accuracy (headline), qwk (quadratic kappa), macro F1 over the 3 classes; auroc = "
        "outstanding vs rest from the score (supervised: 1 - p(outstanding)); ari = adjusted Rand index of the "
        "gradable/ungradable split on images truly and predicted non-outstanding. tau = 95th percentile of "
        "held-out outstanding scores.",
        f"UNO-QA confusion matrix (rows = truth: predicted ungradable, gradable, outstanding): {cm}.",
        COIPS_NOTE,
    ])
    figures = [f"figures/{p.name}" for p in sorted(out.figures.glob("*.png"))]
    title = ("UNO-QA vs baselines (synthetic sOCTA-3x3 stand-in)" if cfg.data.synthetic
             else f"UNO-QA vs baselines ({cfg.data.root})")
    write_comparison(rows, out.path, title, figures, notes)
    for row in rows:
        print(f"{row['method']:24s} " + " ".join(f"{k}={row[k]:.3f}" for k in METRIC_COLUMNS[:4]), flush=True)


def run_reproduce(cfg: Config, wanted: Callable[[str], bool], variants: dict, cluster_options: dict,
                  runs_root: str | None = None) -> Path:
    tic = time.time()
    device = setup_runtime(cfg.runtime, cfg.seed)
    data = prepare_data(cfg)
    out = create_run_dir("octa_iqa", "reproduce", cfg, root=runs_root or cfg.runs_root, device=device)
    print("== uno_qa: training on outstanding images only", flush=True)
    uno = train_and_assess(sub_config(cfg, "uno_qa", runs_root=runs_root), data, device)
    uno_figures(uno, cfg, data, out)
    rows = [_row("uno_qa", uno.metrics, (time.time() - tic) / 60)] if wanted("uno_qa") else []
    rows += baseline_rows(cfg, data, uno, device, out, wanted)
    rows += option_rows(cfg, data, uno, device, variants, cluster_options, runs_root)
    minutes = (time.time() - tic) / 60
    write_table(rows, cfg, data, uno, out, minutes, device)
    print(f"[reproduce] {out.path} ({minutes:.1f} min)", flush=True)
    return out.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = reproduce_parser("UNO-QA: train + evaluate the method and its baselines")
    parser.add_argument("--pretrained", default=None, help="ImageNet weight file of model.backbone: adds a row")
    cfg, args = parse_reproduce(Config, argv, parser, PROJECT_DIR, rows=(*ROWS, *ALL_ROWS, "uno_qa_pretrained"))
    selected = set(args.only) if args.only else set(ROWS) | (set(ALL_ROWS) if args.all else set())
    variants = {k: v for k, v in VARIANTS.items() if k in selected}
    if args.pretrained:
        variants["uno_qa_pretrained"] = [f"model.pretrained={args.pretrained}"]
    options = {k: v for k, v in CLUSTER_OPTIONS.items() if k in selected}
    return run_reproduce(cfg, selected.__contains__, variants, options, args.out)


if __name__ == "__main__":
    main()
