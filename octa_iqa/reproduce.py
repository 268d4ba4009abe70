"""Reproduce the UNO-QA comparison (issue 6): train on outstanding images only, score, threshold, cluster,
evaluate, and compare with PaDiM, PatchCore, k-means on raw features and the supervised upper bound.

    python reproduce.py [--config configs/default.yaml] [--data-root DIR] [--all] [--pretrained FILE] [key=value]

Rows: ``uno_qa`` (trained adaptors + memory bank + tau + test-time clustering), ``padim``, ``patchcore``,
``kmeans_raw``, ``supervised`` and ``uno_qa_two_threshold`` (UNO-QA's score with the baselines' second threshold
instead of clustering). ``--all`` adds ``uno_qa_no_head`` (untrained adaptors), ``uno_qa_random_backbone`` (no
self-supervised pre-training), ``uno_qa_gmm`` and ``uno_qa_tsne`` (clustering options). ``--pretrained FILE``
(ImageNet weights of ``model.backbone``) adds ``uno_qa_pretrained`` so the no-weights path can be compared with it.
Writes ``runs/octa_iqa/reproduce/<timestamp>/comparison.{csv,md}`` and figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.config import ConfigError, load_config
from common.rundir import create_run_dir
from common.runtime import pick_device
from common.tracking import plot_confusion_matrix, write_comparison
from octa_iqa import baselines
from octa_iqa.assessment import example_grid, plot_embedding, plot_score_histograms, quality_metrics
from octa_iqa.data import load_image, load_records, prepare_data, split_outstanding
from octa_iqa.eval import assess, load_trained, score_records
from octa_iqa.settings import CLASS_NAMES, Config
from octa_iqa.train import PROJECT_DIR, run_training

__all__ = ["METRIC_COLUMNS", "main"]

METRIC_COLUMNS = ("balanced_accuracy", "kappa_quadratic", "f1_macro", "auroc", "accuracy", "kappa",
                  "f1_ungradable", "f1_gradable", "f1_outstanding", "auroc_ungradable_vs_gradable", "ari")

COIPS_NOTE = ("Supervised reference on the real sOCTA-3x3-10k test split (COIPS README, not UNO-QA; Acc / Pre / AUC / "
              "F1 in %): Swin-T-Large 91.18 / 91.82 / 0.98 / 91.26, Inception-V3 89.18 / 89.69 / 0.97 / 89.23, "
              "ResNet-101 84.91 / 85.38 / 0.90 / 84.80. UNO-QA's own tables are not available to this project.")


def _row(method: str, metrics: dict, minutes: float) -> dict:
    return {"method": method, **{k: metrics[k] for k in METRIC_COLUMNS}, "minutes": minutes}


def _uno_variant(cfg_path: str, base: list[str], extra: list[str], name: str, test_records, device
                 ) -> tuple[dict, Config, Path]:
    vcfg = load_config(Config, cfg_path, base + extra + [f"experiment=reproduce_{name}"], search_dirs=[PROJECT_DIR])
    run = run_training(vcfg)
    model, holdout = load_trained(vcfg, run / "checkpoints" / "best.pt", device)
    scored = score_records(model, test_records, vcfg, device)
    result = assess(scored, holdout, vcfg)
    return quality_metrics(scored.labels, result.pred, scored.scores), vcfg, run


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="UNO-QA: train + evaluate the method and its baselines")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--data-root", default=None, help="dataset root (sOCTA layout); default: the config's")
    parser.add_argument("--all", action="store_true", help="also the ablations and clustering options")
    parser.add_argument("--pretrained", default=None, help="ImageNet weight file of model.backbone: adds a row")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    base = list(args.overrides) + ([f"data.root={args.data_root}", "data.synthetic=false"] if args.data_root else [])
    try:
        cfg = load_config(Config, args.config, base + ["experiment=reproduce_uno_qa"], search_dirs=[PROJECT_DIR])
    except ConfigError as exc:
        parser.error(str(exc))
    tic = time.time()
    device = pick_device(cfg.runtime.device)
    out = create_run_dir("octa_iqa", "reproduce", cfg, root=cfg.runs_root, device=device)
    prepare_data(cfg)
    train_records = load_records(cfg.data, cfg.data.train_split)
    test_records = load_records(cfg.data, cfg.data.test_split)
    y_test = np.array([r.label for r in test_records])
    rows = []

    # --- UNO-QA
    t0 = time.time()
    print("== uno_qa: training on outstanding images only", flush=True)
    run = run_training(cfg)
    model, holdout = load_trained(cfg, run / "checkpoints" / "best.pt", device)
    scored = score_records(model, test_records, cfg, device)
    result = assess(scored, holdout, cfg)
    m = quality_metrics(y_test, result.pred, scored.scores)
    rows.append(_row("uno_qa", m, (time.time() - t0) / 60))
    plot_score_histograms(scored.scores, y_test, [result.tau], out.figures / "score_hist_uno_qa.png")
    plot_embedding(result.cluster.embedding, result.cluster.labels, y_test[result.non_outstanding],
                   out.figures / "embedding_uno_qa.png")
    images = [load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in test_records]
    example_grid(images, result.pred, y_test, out.figures / "examples_uno_qa.png")
    plot_confusion_matrix(m["confusion_matrix"], CLASS_NAMES, out.figures / "confusion_uno_qa.png")
    uno_cm = m["confusion_matrix"]

    # UNO-QA score with a second threshold instead of clustering (what clustering adds)
    two = baselines.two_threshold_labels(scored.scores, result.tau, cfg.baselines.second_split, cfg.seed)
    rows.append(_row("uno_qa_two_threshold", quality_metrics(y_test, two, scored.scores), 0.0))

    # --- anomaly baselines on the same frozen backbone and the same outstanding images
    fit, hold = split_outstanding(train_records, cfg.data.holdout_fraction, cfg.data.split_seed)
    feats = {name: baselines.backbone_features(model.backbone, recs, cfg, device)
             for name, recs in (("fit", fit), ("hold", hold), ("test", test_records))}
    for name, fn in (("padim", baselines.padim), ("patchcore", baselines.patchcore)):
        t0 = time.time()
        print(f"== {name}", flush=True)
        res = fn(feats["fit"], feats["hold"], feats["test"], cfg)
        rows.append(_row(name, quality_metrics(y_test, res.pred, res.score, res.ug_score), (time.time() - t0) / 60))
        if name == "patchcore":
            plot_score_histograms(res.score, y_test, [res.tau], out.figures / "score_hist_patchcore.png",
                                  "PatchCore image score")
    t0 = time.time()
    res = baselines.kmeans_raw(feats["fit"], feats["test"], cfg)
    rows.append(_row("kmeans_raw", quality_metrics(y_test, res.pred, res.score, res.ug_score), (time.time() - t0) / 60))

    # --- supervised upper bound (all three classes of the training split)
    t0 = time.time()
    print("== supervised (all labels)", flush=True)
    res = baselines.supervised(model.backbone.state_dict(), train_records, test_records, cfg, device)
    sup = quality_metrics(y_test, res.pred, res.score, res.ug_score)
    rows.append(_row("supervised", sup, (time.time() - t0) / 60))

    # --- options
    variants: list[tuple[str, list[str]]] = []
    if args.all:
        variants += [("uno_qa_no_head", ["model.train_head=false"]),
                     ("uno_qa_random_backbone", ["model.pretrained=none"])]
    if args.pretrained:
        variants.append(("uno_qa_pretrained", [f"model.pretrained={args.pretrained}"]))
    for name, extra in variants:
        t0 = time.time()
        print(f"== {name}: {' '.join(extra)}", flush=True)
        vm, _, _ = _uno_variant(args.config, base, extra, name, test_records, device)
        rows.append(_row(name, vm, (time.time() - t0) / 60))
    if args.all:
        for name, extra in (("uno_qa_gmm", ["cluster.method=gmm"]), ("uno_qa_tsne", ["cluster.reduce=tsne"])):
            vcfg = load_config(Config, args.config, base + extra, search_dirs=[PROJECT_DIR])
            r2 = assess(scored, holdout, vcfg)
            rows.append(_row(name, quality_metrics(y_test, r2.pred, scored.scores), 0.0))

    wall = (time.time() - tic) / 60
    cm = "; ".join(f"{CLASS_NAMES[i]}: {list(map(int, uno_cm[i]))}" for i in range(3))
    notes = "\n\n".join([
        f"Data: `{cfg.data.root}` ({cfg.data.format}); train {len(train_records)} images, of which the "
        f"{len(fit)} + {len(hold)} outstanding ones (fit + held-out) are all UNO-QA and the anomaly baselines see; "
        f"test {len(test_records)}. Backbone `{cfg.model.backbone}` ({cfg.model.pretrained}); config "
        f"`{args.config}`; wall time {wall:.1f} min on {device}.",
        "Metrics: balanced_accuracy (headline), quadratic kappa, macro F1 over the 3 classes; auroc = outstanding vs "
        "rest from the score (supervised: 1 - p(outstanding)); ari = adjusted Rand index of the gradable/ungradable "
        "split on images truly and predicted non-outstanding. tau = 95th percentile of held-out outstanding scores.",
        f"UNO-QA confusion matrix (rows = truth: predicted ungradable, gradable, outstanding): {cm}.",
        COIPS_NOTE,
    ])
    figures = ["figures/score_hist_uno_qa.png", "figures/embedding_uno_qa.png", "figures/examples_uno_qa.png",
               "figures/confusion_uno_qa.png", "figures/score_hist_patchcore.png"]
    write_comparison(rows, out.path, "UNO-QA vs baselines (synthetic sOCTA-3x3 stand-in)" if cfg.data.synthetic
                     else f"UNO-QA vs baselines ({cfg.data.root})", figures, notes)
    for row in rows:
        print(f"{row['method']:24s} " + " ".join(f"{k}={row[k]:.3f}" for k in METRIC_COLUMNS[:4]), flush=True)
    print(f"[reproduce] {out.path} ({wall:.1f} min)", flush=True)
    return out.path


if __name__ == "__main__":
    main()
