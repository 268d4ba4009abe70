"""Evaluation and prediction (official main.py evaluates the final and the best-validation weights): test a
checkpoint on a labelled split (AUC on logits and on probabilities, accuracy, macro F1, quadratic and unweighted
kappa, per-class AUC) into ``eval/summary.csv`` + ``eval/per_case.csv`` with ROC and confusion figures, or predict
class probabilities for unlabelled images (the LPM runs online, so no preload cache is needed).

The model is rebuilt from the config stored in the checkpoint (``--config`` replaces it; overrides apply).

    python eval.py [--checkpoint auto|PATH] [--split test] [--out DIR]
    python eval.py --checkpoint runs/fpt_plus/default/<time>/checkpoints/best.pt --predict my_images/ [--out DIR]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_checkpoint
from common.cli import eval_parser, parse_eval
from common.readers import list_images
from common.rundir import resolve_path
from common.runtime import setup_runtime
from fpt_plus.data import IMAGE_SUFFIXES, SPLITS, Record
from fpt_plus.engine import evaluate, predict
from fpt_plus.models.factory import build_model
from fpt_plus.models.lpm import resolve_lpm_amp
from fpt_plus.pipeline import PROJECT, SCALARS, DataBundle, build_dataset, make_loader, prepare_data, write_evaluation
from fpt_plus.settings import Config

__all__ = ["evaluate_checkpoint", "predict_folder", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def load_model(cfg: Config, checkpoint: Path, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The network with the LPM built in (online path) and the checkpoint's learnable weights."""
    amp = resolve_lpm_amp(cfg.model.lpm.amp, device)
    model = build_model(cfg.model, num_classes, preloaded=False, lpm_amp=amp).to(device)
    model.load_state_dict(load_checkpoint(checkpoint, map_location=device)["model"])
    return model


def checkpoint_tag(checkpoint: Path) -> str:
    """Row name in ``eval/summary.csv``: ``best``, ``final`` (last.pt, as train.py names it) or the file stem."""
    return "final" if checkpoint.stem == "last" else checkpoint.stem


def evaluate_checkpoint(cfg: Config, checkpoint: Path, split: str = "test", out: str | Path | None = None
                        ) -> dict[str, Any]:
    """Metrics of a checkpoint on a labelled split (online LPM; equal to the cached path in fp32), written to
    ``out`` (default ``<run>/eval``) with figures in ``<run>/figures`` (or ``<out>/figures``)."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    bundle = prepare_data(cfg)
    model = load_model(cfg, checkpoint, bundle.num_classes, device)
    dataset = build_dataset(cfg, bundle, split, tuple(model.input_keys), train=False)
    loader = make_loader(dataset, cfg.optim.eval_batch_size, train=False, seed=cfg.seed)
    metrics, (idx, labels, logits) = evaluate(model, loader, device, bundle.num_classes, cfg.runtime.amp,
                                              cfg.runtime.progress)
    run_dir = checkpoint.resolve().parent.parent
    eval_dir = resolve_path(out) if out is not None else run_dir / "eval"
    figures = eval_dir / "figures" if out is not None else run_dir / "figures"
    write_evaluation(eval_dir, figures, checkpoint_tag(checkpoint), split, metrics, idx, labels, logits,
                     dataset.records, bundle.classes)
    print(f"{split} ({checkpoint}): " + ", ".join(f"{k} {metrics[k]:.4f}" for k in SCALARS))
    print(f"tables written to {eval_dir}")
    return metrics


def predict_folder(cfg: Config, checkpoint: Path, folder: str | Path, out: str | Path | None = None) -> Path:
    """Class probabilities of the unlabelled images under ``folder`` -> ``<out>/predictions.csv`` (default
    ``<run>/predict/``) with columns ``image, pred, pred_class, prob_<class>...``."""
    import pandas as pd

    from common.metrics import softmax_np

    device = setup_runtime(cfg.runtime, cfg.seed)
    extra = load_checkpoint(checkpoint).get("extra", {})
    missing = [k for k in ("classes", "mean", "std") if k not in extra]
    if missing:
        raise ValueError(f"{checkpoint} lacks {missing} in its `extra` record; use a checkpoint written by train.py")
    classes = list(extra["classes"])
    bundle = DataBundle({s: [] for s in SPLITS}, classes, list(extra["mean"]), list(extra["std"]))
    model = load_model(cfg, checkpoint, len(classes), device)
    files = list_images([str(folder)], IMAGE_SUFFIXES)
    records = [Record(f, f.name, 0, "test") for f in files]
    dataset = build_dataset(cfg, bundle, "test", tuple(model.input_keys), train=False, records=records)
    loader = make_loader(dataset, cfg.optim.eval_batch_size, train=False, seed=cfg.seed)
    _, _, logits = predict(model, loader, device, cfg.runtime.amp, cfg.runtime.progress)
    probs = softmax_np(logits)
    frame = pd.DataFrame({"image": [str(f) for f in files], "pred": probs.argmax(1),
                          "pred_class": [classes[i] for i in probs.argmax(1)]})
    for c, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, c]
    out_dir = resolve_path(out) if out is not None else checkpoint.resolve().parent.parent / "predict"
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    print(f"predictions for {len(files)} images written to {out_dir / 'predictions.csv'}")
    return out_dir / "predictions.csv"


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | Path:
    parser = eval_parser("Evaluate a checkpoint on a labelled split, or predict on unlabelled images.")
    parser.add_argument("--split", default="test", choices=list(SPLITS))
    parsed = parse_eval(Config, argv, parser, PROJECT, PROJECT_DIR)
    cfg, checkpoint, args = parsed.config, parsed.checkpoint, parsed.args
    if args.predict:
        return predict_folder(cfg, checkpoint, args.predict, args.out)
    return evaluate_checkpoint(cfg, checkpoint, args.split, args.out)


if __name__ == "__main__":
    main()
