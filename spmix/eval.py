"""Evaluate a trained SPMix/baseline checkpoint or predict on unlabeled images (the model is rebuilt from the
config stored in the checkpoint).

    python eval.py [--checkpoint auto|PATH] [--subset test] [--out DIR] [key=value ...]
    python eval.py --checkpoint PATH --predict FOLDER [--out DIR]

Metrics: accuracy, balanced accuracy (mean per-class recall, the ISIC 2018 challenge metric), macro F1, macro AUC,
per-class recall and head/medium/tail group means (``data.head/medium/tail``). Writes ``<out>/summary.csv``,
``<out>/per_case.csv`` and the confusion-matrix / ROC figures (default ``<run>/eval``); ``--predict`` writes
``<out>/predictions.csv`` in the ISIC submission format (image + one probability per class).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spmix.engine import evaluate, predict
from spmix.model import SPMixNet, build_model
from spmix.pipeline import eval_loader, prepare_data, subset
from spmix.settings import CLASSES, Config

PROJECT_DIR = Path(__file__).resolve().parent


def predict_folder(model: SPMixNet, cfg: Config, folder: str | Path, device: torch.device, out: Path) -> pd.DataFrame:
    """Predict every image in ``folder`` -> CSV in the ISIC submission format (image + one probability per class)."""
    from spmix.data import list_unlabeled

    frame = list_unlabeled(folder)
    index, _, logits = predict(model, eval_loader(cfg, frame), device, cfg.runtime.amp, cfg.runtime.progress)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    result = pd.DataFrame({"image": frame["image"].to_numpy()[index]})
    for c, name in enumerate(CLASSES):
        result[name] = probs[:, c]
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    return result


def load_model(cfg: Config, checkpoint: Path, device: torch.device) -> SPMixNet:
    from common.checkpoint import load_checkpoint

    model = build_model(cfg.model, len(CLASSES), cfg.data.img_size).to(device)
    model.load_state_dict(load_checkpoint(checkpoint, map_location=device)["model"])
    return model


def main(argv: Sequence[str] | None = None) -> dict | pd.DataFrame:
    from common.cli import eval_parser, parse_eval
    from common.datasets import DatasetFolderError, DataVerificationError
    from common.runtime import pick_device
    from spmix.reports import write_evaluation

    parser = eval_parser("Evaluate an SPMix checkpoint or predict on unlabeled images")
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"))
    parsed = parse_eval(Config, argv, parser, "spmix", PROJECT_DIR)
    cfg, args, checkpoint = parsed.config, parsed.args, parsed.checkpoint
    device = pick_device(cfg.runtime.device)
    model = load_model(cfg, checkpoint, device)
    run_dir = checkpoint.parent.parent
    if args.predict:
        out = (Path(args.out) if args.out else run_dir / "predict") / "predictions.csv"
        result = predict_folder(model, cfg, args.predict, device, out)
        print(f"wrote {out} ({len(result)} images)")
        return result
    try:
        prep = prepare_data(cfg, with_saliency=False)
    except (DatasetFolderError, DataVerificationError) as exc:
        parser.exit(1, f"eval.py: error: {exc}\n")
    frame = subset(prep.frame, args.subset)
    result = evaluate(model, eval_loader(cfg, frame), device, cfg.groups, cfg.runtime.amp, cfg.runtime.progress)
    out_dir = Path(args.out) if args.out else run_dir / "eval"
    write_evaluation(result, frame, args.subset, out_dir, out_dir / "figures")
    print({k: round(v, 4) for k, v in result.metrics.items() if not np.isnan(v)})
    return result.metrics


if __name__ == "__main__":
    main()
