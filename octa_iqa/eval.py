"""Evaluate (or predict with) a trained UNO-QA model: score -> threshold -> test-time clustering -> metrics.

Stage 1 (spec 1.2 D-E): s(x) against tau (95th percentile of the held-out outstanding scores stored in the
checkpoint; Otsu / GMM on the test scores as options) gives outstanding vs non-outstanding. Stage 2 (spec 1.2 F):
the non-outstanding images of the evaluated set are clustered (transductive) into gradable / ungradable.

    python eval.py --config configs/default.yaml [--checkpoint PATH] [--split test] [--out DIR]
    python eval.py --config configs/default.yaml --predict /folder/of/images [--out DIR]   # unlabeled: CSV

Writes ``eval/summary.csv`` (one row per split), ``eval/per_case_<split>.csv`` and figures (score histograms per
class with tau, the 2-D embedding of the non-outstanding images by cluster and by truth, examples per predicted
class, confusion matrix).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.checkpoint import CheckpointError, load_checkpoint
from common.config import load_config
from common.rundir import latest_run, resolve_path
from common.runtime import pick_device
from common.tracking import plot_confusion_matrix
from octa_iqa.assessment import example_grid, plot_embedding, plot_score_histograms, quality_metrics
from octa_iqa.cluster import ClusterResult, cluster_non_outstanding
from octa_iqa.data import DataError, QualityDataset, Record, list_unlabeled, load_image, load_records, prepare_data
from octa_iqa.engine import ScoredSet, make_loader, score_loader
from octa_iqa.model import LowQualityRepresentation
from octa_iqa.settings import CLASS_NAMES, Config
from octa_iqa.thresholds import outstanding_threshold
from octa_iqa.train import PROJECT_DIR, build_model

__all__ = ["Assessment", "load_trained", "score_records", "assess", "evaluate_split", "run_eval", "predict_folder",
           "main"]


@dataclass
class Assessment:
    """``pred`` (N,) in {0, 1, 2}; ``tau``; ``cluster`` result over the predicted non-outstanding images."""

    pred: np.ndarray
    tau: float
    non_outstanding: np.ndarray
    cluster: ClusterResult


def load_trained(cfg: Config, checkpoint: str | Path, device: torch.device | None = None
                 ) -> tuple[LowQualityRepresentation, np.ndarray]:
    """Model (backbone + adaptors + bank) and held-out outstanding scores from a ``best.pt`` of train.py."""
    ckpt = load_checkpoint(checkpoint)
    if "holdout_scores" not in ckpt.get("extra", {}):
        raise CheckpointError(f"{checkpoint} has no held-out scores (extra.holdout_scores); use the best.pt that "
                              f"train.py writes when training finishes")
    model = build_model(cfg, "none")
    model.load_state_dict(ckpt["model"])
    model.to(device or torch.device("cpu")).eval()
    return model, np.asarray(ckpt["extra"]["holdout_scores"], dtype=np.float64)


def score_records(model: LowQualityRepresentation, records: Sequence[Record], cfg: Config,
                  device: torch.device) -> ScoredSet:
    loader = make_loader(QualityDataset(records, cfg.data, cfg.model.pretrained), cfg.optim.batch_size, False,
                         cfg.seed, cfg.data.num_workers)
    return score_loader(model, loader, device, cfg.threshold.top_fraction, cfg.threshold.aggregate)


def assess(scored: ScoredSet, holdout_scores: np.ndarray, cfg: Config) -> Assessment:
    """Threshold + test-time clustering; uses no label."""
    tau = outstanding_threshold(cfg.threshold.rule, holdout_scores, scored.scores, cfg.threshold.quantile, cfg.seed)
    non = scored.scores > tau
    sub = scored.subset(non)
    result = cluster_non_outstanding(sub.pooled, sub.score_features, cfg.cluster)
    pred = np.full(len(scored.scores), 2, np.int64)
    pred[non] = result.labels
    return Assessment(pred, tau, non, result)


def evaluate_split(model: LowQualityRepresentation, holdout_scores: np.ndarray, records: Sequence[Record],
                   cfg: Config, device: torch.device, out_dir: Path | None, tag: str, figures: bool = True
                   ) -> tuple[dict, ScoredSet, Assessment]:
    scored = score_records(model, records, cfg, device)
    result = assess(scored, holdout_scores, cfg)
    metrics = quality_metrics(scored.labels, result.pred, scored.scores)
    metrics["tau"] = result.tau
    metrics["cluster_fallback"] = float(result.cluster.fallback)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = np.full(len(records), -1)
        cluster_id[result.non_outstanding] = result.cluster.assignment
        pd.DataFrame({"path": [str(r.path) for r in records], "label": scored.labels, "score": scored.scores,
                      "pred": result.pred, "pred_name": [CLASS_NAMES[p] for p in result.pred],
                      "cluster": cluster_id}).to_csv(out_dir / f"per_case_{tag}.csv", index=False)
        if figures:
            fig_dir = out_dir / "figures"
            plot_score_histograms(scored.scores, scored.labels, [result.tau], fig_dir / f"hist_{tag}.png")
            if result.non_outstanding.sum() >= 2:
                plot_embedding(result.cluster.embedding, result.cluster.labels,
                               scored.labels[result.non_outstanding], fig_dir / f"embedding_{tag}.png")
            images = [load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in records]
            example_grid(images, result.pred, scored.labels, fig_dir / f"examples_{tag}.png")
            plot_confusion_matrix(metrics["confusion_matrix"], CLASS_NAMES, fig_dir / f"confusion_{tag}.png")
    return metrics, scored, result


def _scalar_row(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if np.isscalar(v)}


def run_eval(cfg: Config, checkpoint: str | Path, out_dir: str | Path, splits: Sequence[str] | None = None,
             figures: bool = True) -> pd.DataFrame:
    """Evaluate the test split and every configured extra split that exists; returns the summary table."""
    device = pick_device(cfg.runtime.device)
    prepare_data(cfg)
    model, holdout = load_trained(cfg, checkpoint, device)
    out_dir = Path(out_dir)
    rows = []
    for split in splits or [cfg.data.test_split, *cfg.data.extra_splits]:
        try:
            records = load_records(cfg.data, split)
        except DataError as exc:
            if split in cfg.data.extra_splits:
                print(f"[eval] extra split {split!r} not evaluated: {exc}", flush=True)
                continue
            raise
        metrics, _, _ = evaluate_split(model, holdout, records, cfg, device, out_dir, split, figures)
        rows.append({"split": split, "n": len(records), **_scalar_row(metrics)})
        print(f"[eval] {split}: " + " ".join(f"{k}={v:.4f}" for k, v in _scalar_row(metrics).items()), flush=True)
    summary = pd.DataFrame(rows)
    summary.to_csv(out_dir / "summary.csv", index=False)
    return summary


def predict_folder(cfg: Config, checkpoint: str | Path, folder: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """Unlabeled images -> CSV ``path,score,outstanding,pred,pred_name`` (clustering is transductive over them)."""
    device = pick_device(cfg.runtime.device)
    model, holdout = load_trained(cfg, checkpoint, device)
    records = list_unlabeled(folder)
    scored = score_records(model, records, cfg, device)
    result = assess(scored, holdout, cfg)
    frame = pd.DataFrame({"path": [str(r.path) for r in records], "score": scored.scores,
                          "outstanding": (~result.non_outstanding).astype(int), "pred": result.pred,
                          "pred_name": [CLASS_NAMES[p] for p in result.pred]})
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    print(f"[predict] {len(frame)} images -> {out_csv} (tau={result.tau:.4f})", flush=True)
    return frame


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description="UNO-QA: evaluate on labelled splits or predict on a folder")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", default=None, help="best.pt of a training run (default: newest of the "
                                                           "config's experiment)")
    parser.add_argument("--split", nargs="*", default=None, help="splits to evaluate (default: test + extra)")
    parser.add_argument("--predict", default=None, help="folder of unlabeled images: write predictions.csv")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    from common.config import ConfigError

    try:
        cfg = load_config(Config, args.config, args.overrides, search_dirs=[PROJECT_DIR])
    except ConfigError as exc:
        parser.error(str(exc))
    checkpoint = args.checkpoint
    if checkpoint is None:
        run = latest_run("octa_iqa", cfg.experiment, root=cfg.runs_root, require="checkpoints/best.pt")
        if run is None:
            parser.error(f"no trained run of experiment {cfg.experiment!r} under {resolve_path(cfg.runs_root)}; "
                         f"train first or pass --checkpoint")
        checkpoint = run / "checkpoints" / "best.pt"
    out = Path(args.out) if args.out else Path(checkpoint).parent.parent / "eval"
    if args.predict:
        return predict_folder(cfg, checkpoint, args.predict, out / "predictions.csv")
    return run_eval(cfg, checkpoint, out, args.split)


if __name__ == "__main__":
    main()
