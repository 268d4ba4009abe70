"""Evaluate a pre-trained PRIOR checkpoint: CheXpert 5x200 zero-shot classification (official prompt
"<class> is observed", softmax(global) + 0.5 softmax(local)), image -> MIMIC test report retrieval (P@1/5/10)
and, on data with lesion boxes, the pointing game and prototype statistics. ``--predict DIR`` writes zero-shot
predictions for the images under DIR instead. The model is rebuilt from the checkpoint's own config.

    python eval.py --checkpoint auto [--config configs/default.yaml] [--out DIR] [key=value ...]
    python eval.py --checkpoint runs/prior/default/<run>/checkpoints/last.pt --predict /path/to/images
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from common.checkpoint import load_checkpoint
from common.cli import eval_parser, parse_eval
from common.readers import list_images
from common.runtime import setup_runtime
from common.tracking import write_eval_tables
from prior.data import FIVE_CLASSES, ImageDataset
from prior.downstream import zeroshot
from prior.evaluation import evaluate_pretrained
from prior.models import build_model
from prior.pipeline import prepare_data
from prior.settings import Config

__all__ = ["PROJECT_DIR", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def _predict(cfg: Config, model, folder: str, out: Path, device) -> Path:
    paths = list_images([folder])
    ds = ImageDataset(paths, [0] * len(paths), cfg.data.image_size, cfg.data.mean, cfg.data.std)
    loader = DataLoader(ds, batch_size=32, shuffle=False)
    _, probs = zeroshot(model, loader, np.zeros(len(paths), dtype=int), list(FIVE_CLASSES), device,
                        cfg.eval.prompt, cfg.eval.local_weight, quantize=cfg.eval.text_embedding == "prototype")
    rows = [{"image": str(p), "prediction": FIVE_CLASSES[int(q.argmax())],
             **{f"score_{c}": float(v) for c, v in zip(FIVE_CLASSES, q)}} for p, q in zip(paths, probs)]
    summary, _ = write_eval_tables(out, {"images": len(rows)}, rows, prefix="predict_")
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    parser = eval_parser("Evaluate a PRIOR checkpoint (zero-shot classification, retrieval, grounding)")
    ev = parse_eval(Config, argv, parser, "prior", PROJECT_DIR)
    cfg = ev.config
    device = setup_runtime(cfg.runtime, cfg.seed)
    model = build_model(cfg.model, cfg.data.image_size, cfg.loss.method, cfg.loss.global_weight_stage3).to(device)
    model.load_state_dict(load_checkpoint(ev.checkpoint)["model"])
    run_dir = ev.checkpoint.parent.parent
    if ev.args.predict:
        out = Path(ev.args.out) if ev.args.out else run_dir / "predict"
        print(f"predictions: {_predict(cfg, model, ev.args.predict, out, device)}")
        return {}
    out = Path(ev.args.out) if ev.args.out else run_dir / "eval"
    summary, per_case = evaluate_pretrained(cfg, model, prepare_data(cfg), device, out / "figures")
    write_eval_tables(out, {"checkpoint": str(ev.checkpoint), **summary}, per_case)
    print(" ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
