"""Evaluate (or predict with) a trained UNO-QA model: score -> threshold -> test-time clustering -> metrics.

Stage 1: s(x) against tau (95th percentile of the held-out outstanding scores stored in the checkpoint; Otsu / GMM
on the test scores as options) gives outstanding vs non-outstanding. Stage 2 (the paper's test-time clustering):
the non-outstanding images of the evaluated set are clustered (transductive) into gradable / ungradable.

    python eval.py [--checkpoint auto|PATH] [--config FILE] [--split test] [--out DIR] [key=value ...]
    python eval.py --predict /folder/of/images [--out DIR]   # unlabeled images -> predictions.csv

The config is the one stored in the checkpoint (``--config`` and overrides replace it). Writes
``eval/summary.csv`` (one row per split), ``eval/per_case.csv`` (one row per image, with its split) and figures
(score histograms per class with tau, the 2-D embedding of the non-outstanding images by cluster and by truth,
examples per predicted class, confusion matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.checkpoint import CheckpointError, load_checkpoint
from common.cli import eval_parser, parse_eval
from common.datasets import verify_files
from common.runtime import dist_info, pick_device
from common.tracking import plot_confusion_matrix, write_eval_tables
from octa_iqa.assessment import example_grid, plot_embedding, plot_score_histograms, quality_metrics
from octa_iqa.cluster import ClusterResult, cluster_non_outstanding
from octa_iqa.data import QualityDataset, Record, list_unlabeled, load_image, load_records
from octa_iqa.engine import ScoredSet, make_loader, score_loader
from octa_iqa.model import LowQualityRepresentation, build_model
from octa_iqa.pipeline import prepare_data
from octa_iqa.settings import CLASS_NAMES, Config
from octa_iqa.thresholds import outstanding_threshold

PROJECT_DIR = Path(__file__).resolve().parent

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
    model = build_model(cfg.model, "none")
    model.load_state_dict(ckpt["model"])
    model.to(device or torch.device("cpu")).eval()
    extra = ckpt["extra"]
    if "holdout_patch_term" in extra:  # s(x) of the held-out images under this config's image_weight
        held = model.combine(extra["holdout_patch_term"].double(), extra["holdout_image_term"].double(),
                             cfg.threshold.image_weight, cfg.threshold.two_sided)
        return model, held.numpy()
    return model, np.asarray(extra["holdout_scores"], dtype=np.float64)


def score_records(model: LowQualityRepresentation, records: Sequence[Record], cfg: Config,
                  device: torch.device) -> ScoredSet:
    loader = make_loader(QualityDataset(records, cfg.data, cfg.model.pretrained), cfg.optim.batch_size, False,
                         cfg.seed, cfg.data.num_workers)
    return score_loader(model, loader, device, cfg.threshold.top_fraction, cfg.threshold.aggregate,
                        cfg.threshold.image_weight, cfg.threshold.two_sided, cfg.runtime.progress)


def assess(scored: ScoredSet, holdout_scores: np.ndarray, cfg: Config) -> Assessment:
    """Threshold + test-time clustering; uses no label."""
    tau = outstanding_threshold(cfg.threshold.rule, holdout_scores, scored.scores, cfg.threshold.quantile, cfg.seed)
    non = scored.scores > tau
    sub = scored.subset(non)
    result = cluster_non_outstanding(sub.pooled, sub.score_features, cfg.cluster, tau, cfg.runtime.progress)
    pred = np.full(len(scored.scores), 2, np.int64)
    pred[non] = result.labels
    return Assessment(pred, tau, non, result)


def evaluate_split(model: LowQualityRepresentation, holdout_scores: np.ndarray, records: Sequence[Record],
                   cfg: Config, device: torch.device, out_dir: Path | None, tag: str, figures: bool = True
                   ) -> tuple[dict, pd.DataFrame, Assessment]:
    """Metrics, the per-image table (split ``tag``) and the assessment of one split; figures under ``out_dir``."""
    scored = score_records(model, records, cfg, device)
    result = assess(scored, holdout_scores, cfg)
    metrics = quality_metrics(scored.labels, result.pred, scored.scores)
    metrics["tau"] = result.tau
    metrics["cluster_fallback"] = float(result.cluster.fallback)
    cluster_id = np.full(len(records), -1)
    cluster_id[result.non_outstanding] = result.cluster.assignment
    per_case = pd.DataFrame({"split": tag, "path": [str(r.path) for r in records], "label": scored.labels,
                             "score": scored.scores, "pred": result.pred,
                             "pred_name": [CLASS_NAMES[p] for p in result.pred], "cluster": cluster_id})
    if out_dir is not None and figures:
        fig_dir = out_dir / "figures"
        plot_score_histograms(scored.scores, scored.labels, [result.tau], fig_dir / f"hist_{tag}.png")
        if result.non_outstanding.sum() >= 2:
            plot_embedding(result.cluster.embedding, result.cluster.labels,
                           scored.labels[result.non_outstanding], fig_dir / f"embedding_{tag}.png")
        images = [load_image(r.path, cfg.data.image_size, cfg.data.resize) for r in records]
        example_grid(images, result.pred, scored.labels, fig_dir / f"examples_{tag}.png")
        plot_confusion_matrix(metrics["confusion_matrix"], CLASS_NAMES, fig_dir / f"confusion_{tag}.png")
    return metrics, per_case, result


def _scalar_row(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if np.isscalar(v)}


def run_eval(cfg: Config, checkpoint: str | Path, out_dir: str | Path, splits: Sequence[str] | None = None,
             figures: bool = True) -> pd.DataFrame:
    """Evaluate the test split and every configured extra split that exists; returns the summary table."""
    device = pick_device(cfg.runtime.device)
    data = prepare_data(cfg, with_train=False)  # the evaluated splits only, checked before any work
    model, holdout = load_trained(cfg, checkpoint, device)
    out_dir = Path(out_dir)
    available = {cfg.data.test_split: data.test, **data.extra}
    for split in splits or []:
        if split not in available:
            available[split] = load_records(cfg.data, split)
            verify_files([r.path for r in available[split]], cfg.data.verify, what="OCTA image")
    rows, tables = [], []
    for split in splits or list(available):
        records = available[split]
        metrics, per_case, _ = evaluate_split(model, holdout, records, cfg, device, out_dir, split, figures)
        rows.append({"split": split, "n": len(records), **_scalar_row(metrics)})
        tables.append(per_case)
        print(f"[eval] {split}: " + " ".join(f"{k}={v:.4f}" for k, v in _scalar_row(metrics).items()), flush=True)
    write_eval_tables(out_dir, rows, pd.concat(tables, ignore_index=True))
    return pd.DataFrame(rows)


def predict_folder(cfg: Config, checkpoint: str | Path, folder: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """Unlabeled images -> CSV ``path,score,outstanding,pred,pred_name`` (clustering is transductive over them)."""
    device = pick_device(cfg.runtime.device)
    model, holdout = load_trained(cfg, checkpoint, device)
    records = list_unlabeled(folder)
    verify_files([r.path for r in records], cfg.data.verify, what="OCTA image")
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


def refuse_torchrun() -> None:
    """Only train.py has a torchrun path; evaluation runs in one process."""
    if dist_info().distributed:
        raise SystemExit("octa_iqa: evaluation runs in one process (only train.py has a torchrun path); "
                         "run it with python, not torchrun")


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    refuse_torchrun()
    parser = eval_parser("UNO-QA: evaluate on labelled splits or predict on a folder")
    parser.add_argument("--split", nargs="*", default=None, help="splits to evaluate (default: test + extra)")
    request = parse_eval(Config, argv, parser, "octa_iqa", PROJECT_DIR)
    args, checkpoint = request.args, request.checkpoint
    out = Path(args.out) if args.out else checkpoint.parent.parent / ("predict" if args.predict else "eval")
    if args.predict:
        return predict_folder(request.config, checkpoint, args.predict, out / "predictions.csv")
    return run_eval(request.config, checkpoint, out, args.split)


if __name__ == "__main__":
    main()
