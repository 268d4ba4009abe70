"""Evaluation and prediction (spec 3.3): test a checkpoint on a labelled split (AUC on logits and on
probabilities, accuracy, macro F1, quadratic kappa, per-class AUC, ROC curves, confusion matrix), or predict class
probabilities for unlabelled images (the LPM runs online, so no preload cache is needed).

    python eval.py --config configs/default.yaml --checkpoint runs/.../checkpoints/best.pt [--split test]
    python eval.py --config configs/default.yaml --checkpoint best.pt --predict some/folder --out preds.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.checkpoint import load_checkpoint
from common.config import ConfigError, load_config
from common.readers import list_images
from common.rundir import RunDir, resolve_path
from common.runtime import pick_device
from common.tracking import plot_confusion_matrix, save_figure
from fpt_plus.data import IMAGE_SUFFIXES, Record
from fpt_plus.engine import compute_metrics, predict
from fpt_plus.experiment import DataBundle, build_dataset, make_loader, prepare_data
from fpt_plus.models.factory import build_model
from fpt_plus.settings import ExperimentConfig

__all__ = ["write_evaluation", "plot_roc", "evaluate_checkpoint", "predict_images", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
SCALARS = ("auc", "auc_prob", "accuracy", "balanced_accuracy", "f1_macro", "kappa")


def plot_roc(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str], path: str | Path, title: str = ""
             ) -> Path:
    """One-vs-rest ROC curve per class from ``(N, C)`` scores (logits rank the same way as the AUC definition)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for c, name in enumerate(classes):
        positives = labels == c
        if 0 < positives.sum() < len(labels):
            fpr, tpr, _ = roc_curve(positives, scores[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positives, scores[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, dpi=110)


def write_evaluation(run: RunDir, tag: str, metrics: dict[str, Any], indices: np.ndarray, labels: np.ndarray,
                     logits: np.ndarray, records: Sequence[Record], classes: Sequence[str]) -> None:
    """Append ``tag`` rows to ``eval/summary.csv`` and ``eval/per_case.csv``; write ROC and confusion figures."""
    import pandas as pd

    from common.metrics import softmax_np

    summary = run.eval / "summary.csv"
    row = {"checkpoint": tag, **{k: metrics[k] for k in SCALARS}}
    row.update({f"auc_{name}": v for name, v in zip(classes, metrics["auc_per_class"])})
    frame = pd.DataFrame([row])
    if summary.is_file():
        old = pd.read_csv(summary)
        frame = pd.concat([old[old["checkpoint"] != tag], frame], ignore_index=True)
    frame.to_csv(summary, index=False)
    probs = softmax_np(logits)
    per_case = pd.DataFrame({"checkpoint": tag, "image": [records[i].key for i in indices], "label": labels,
                             "pred": probs.argmax(1)})
    for c, name in enumerate(classes):
        per_case[f"prob_{name}"] = probs[:, c]
    path = run.eval / "per_case.csv"
    if path.is_file():
        old = pd.read_csv(path)
        per_case = pd.concat([old[old["checkpoint"] != tag], per_case], ignore_index=True)
    per_case.to_csv(path, index=False)
    plot_roc(labels, logits, classes, run.figures / f"roc_{tag}.png", title=f"test ROC ({tag} checkpoint)")
    plot_confusion_matrix(metrics["confusion_matrix"], list(classes), run.figures / f"confusion_{tag}.png")


def _load_model(cfg: ExperimentConfig, checkpoint: str | Path, num_classes: int, device: torch.device
                ) -> torch.nn.Module:
    """The network with the LPM built in (online path) and the checkpoint's learnable weights."""
    model = build_model(cfg, num_classes, preloaded=False).to(device)
    ckpt = load_checkpoint(checkpoint, map_location=device)
    model.load_state_dict(ckpt["model"])
    return model


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: str | Path, split: str = "test") -> dict[str, Any]:
    """Metrics of a checkpoint on a labelled split (online LPM; equal to the cached path in fp32)."""
    device = pick_device(cfg.runtime.device)
    bundle = prepare_data(cfg)
    model = _load_model(cfg, checkpoint, bundle.num_classes, device)
    dataset = build_dataset(cfg, bundle, split, tuple(model.input_keys), train=False)
    loader = make_loader(dataset, cfg.train.eval_batch_size, train=False, seed=cfg.seed)
    _, labels, logits = predict(model, loader, device, cfg.runtime.amp)
    return compute_metrics(labels, logits, bundle.num_classes)


def predict_images(cfg: ExperimentConfig, checkpoint: str | Path, paths: Sequence[str], out: str | Path
                   ) -> Path:
    """Class probabilities of unlabelled images -> CSV ``(image, pred, pred_class, prob_<class>...)``."""
    import pandas as pd

    from common.metrics import softmax_np

    device = pick_device(cfg.runtime.device)
    extra = load_checkpoint(checkpoint).get("extra", {})
    missing = [k for k in ("classes", "mean", "std") if k not in extra]
    if missing:
        raise ValueError(f"{checkpoint} lacks {missing} in its `extra` record; use a checkpoint written by train.py")
    classes = list(extra["classes"])
    bundle = DataBundle({"train": [], "val": [], "test": []}, classes, list(extra["mean"]), list(extra["std"]))
    model = _load_model(cfg, checkpoint, len(classes), device)
    files = list_images(paths, IMAGE_SUFFIXES)
    records = [Record(f, f.name, 0, "test") for f in files]
    dataset = build_dataset(cfg, bundle, "test", tuple(model.input_keys), train=False, records=records)
    _, _, logits = predict(model, make_loader(dataset, cfg.train.eval_batch_size, train=False, seed=0), device)
    probs = softmax_np(logits)
    frame = pd.DataFrame({"image": [str(f) for f in files], "pred": probs.argmax(1),
                          "pred_class": [classes[i] for i in probs.argmax(1)]})
    for c, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, c]
    out = resolve_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | Path:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint, or predict on unlabelled images.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--predict", nargs="+", default=None, help="image files or folders to classify")
    parser.add_argument("--out", default="predictions.csv", help="CSV written by --predict")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(ExperimentConfig, args.config, args.overrides, search_dirs=[PROJECT_DIR])
    except ConfigError as exc:
        parser.error(str(exc))
    if args.predict:
        out = predict_images(cfg, args.checkpoint, args.predict, args.out)
        print(f"predictions written to {out}")
        return out
    metrics = evaluate_checkpoint(cfg, args.checkpoint, args.split)
    print(", ".join(f"{k} {metrics[k]:.4f}" for k in SCALARS))
    return metrics


if __name__ == "__main__":
    main()
