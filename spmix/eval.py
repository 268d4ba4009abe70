"""Evaluate a trained SPMix/baseline checkpoint (spec §4 metrics) or predict on unlabeled images.

    python eval.py --config configs/default.yaml [--checkpoint PATH] [--subset test]
    python eval.py --config configs/default.yaml --checkpoint PATH --predict FOLDER [--out preds.csv]

Metrics: accuracy, balanced accuracy (mean per-class recall, the ISIC 2018 challenge metric), macro F1, macro AUC,
per-class recall and head/medium/tail group means (groups from ``eval.*`` in the config).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from spmix.data import CLASSES, ISICDataset, eval_transform, list_unlabeled
from spmix.experiment import Config
from spmix.model import SPMixNet

PROJECT_DIR = Path(__file__).resolve().parent


def _loader(cfg: Config, frame: pd.DataFrame) -> DataLoader:
    ds = ISICDataset(frame, [eval_transform(cfg.data.img_size, cfg.augment)], cache=False)
    return DataLoader(ds, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.num_workers)


def evaluate_subset(model: SPMixNet, cfg: Config, frame: pd.DataFrame, subset: str, device: torch.device,
                    eval_dir: Path | None = None, figures_dir: Path | None = None) -> dict[str, float]:
    """Metrics on ``frame[subset == subset]``; writes ``summary.csv``/``per_case.csv`` (+ confusion matrix PNG)."""
    from common.tracking import plot_confusion_matrix
    from spmix.engine import group_metrics, predict

    part = frame[frame["subset"] == subset].reset_index(drop=True)
    if part.empty:
        raise ValueError(f"the split has no `{subset}` images")
    logits, labels, index = predict(model, _loader(cfg, part), device, cfg.runtime.amp)
    groups = {"head": cfg.eval.head, "medium": cfg.eval.medium, "tail": cfg.eval.tail}
    metrics = group_metrics(labels, logits, groups)
    if eval_dir is not None:
        eval_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"subset": subset, "n": len(labels), **metrics}]).to_csv(eval_dir / "summary.csv", index=False)
        probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
        per_case = pd.DataFrame({"image": part["image"].to_numpy()[index], "label": [CLASSES[i] for i in labels],
                                 "pred": [CLASSES[i] for i in probs.argmax(1)]})
        for c, name in enumerate(CLASSES):
            per_case[f"p_{name}"] = probs[:, c]
        per_case.to_csv(eval_dir / "per_case.csv", index=False)
    if figures_dir is not None:
        from sklearn.metrics import confusion_matrix

        cm = confusion_matrix(labels, logits.argmax(1), labels=list(range(len(CLASSES))))
        plot_confusion_matrix(cm, CLASSES, figures_dir / f"confusion_{subset}.png")
    return metrics


def predict_folder(model: SPMixNet, cfg: Config, folder: str | Path, device: torch.device, out: Path) -> pd.DataFrame:
    """Predict every image in ``folder`` -> CSV in the ISIC submission format (image + one probability per class)."""
    from spmix.engine import predict

    frame = list_unlabeled(folder)
    logits, _, index = predict(model, _loader(cfg, frame), device, cfg.runtime.amp)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    result = pd.DataFrame({"image": frame["image"].to_numpy()[index]})
    for c, name in enumerate(CLASSES):
        result[name] = probs[:, c]
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    return result


def main(argv: Sequence[str] | None = None) -> dict | pd.DataFrame:
    from common.checkpoint import load_checkpoint
    from common.config import build_arg_parser, parse_cli
    from common.rundir import latest_run
    from common.runtime import pick_device
    from spmix.train import prepare_data

    parser = build_arg_parser("Evaluate an SPMix checkpoint or predict on unlabeled images", training=False)
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: newest best.pt of the experiment)")
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"))
    parser.add_argument("--predict", default=None, help="folder of unlabeled images: write predictions instead")
    parser.add_argument("--out", default=None, help="output folder (evaluate) or CSV file (predict)")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    device = pick_device(cfg.runtime.device)
    ckpt_path = args.checkpoint
    if ckpt_path is None:
        run = latest_run("spmix", cfg.experiment, cfg.runs_root, require="checkpoints/best.pt")
        if run is None:
            parser.error(f"no checkpoint given and no run of experiment {cfg.experiment} under {cfg.runs_root}")
        ckpt_path = run / "checkpoints" / "best.pt"
    model = SPMixNet(cfg.model, len(CLASSES), cfg.data.img_size).to(device)
    model.load_state_dict(load_checkpoint(ckpt_path, map_location=device)["model"])
    if args.predict:
        out = Path(args.out) if args.out else Path(ckpt_path).parent.parent / "eval" / "predictions.csv"
        result = predict_folder(model, cfg, args.predict, device, out)
        print(f"wrote {out} ({len(result)} images)")
        return result
    prep = prepare_data(cfg)
    out_dir = Path(args.out) if args.out else Path(ckpt_path).parent.parent / "eval"
    metrics = evaluate_subset(model, cfg, prep.frame, args.subset, device, out_dir, None)
    print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and not np.isnan(v)})
    return metrics


if __name__ == "__main__":
    main()
