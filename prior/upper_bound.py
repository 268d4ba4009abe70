"""Supervised upper bound of the zero-shot task [ours]: the same image encoder trained with labels, to check that
the synthetic CheXpert 5x200 task leaves headroom above global-only pre-training.

The encoder of ``model.image`` (same geometry, input size, epochs = the sum of the three pre-training stages,
batch, AdamW and warm-up cosine of stage 1's peak LR) is trained from scratch with a linear head on its global
(attention-pooled) feature, binary cross-entropy on the five zero-shot labels of the MIMIC-CXR training studies
(uncertain and blank = 0, the first frontal image, the pre-training augmentation of the image only). Evaluation:
argmax over the five logits on the 5x200 set, the zero-shot accuracy's counterpart with labels. Not a method of
the paper; a calibration check of the synthetic data.

    python upper_bound.py [--config configs/default.yaml] [key=value ...]

Writes ``runs/prior/<experiment>-upper/<timestamp>/eval/summary.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader

from common.cli import parse_train, train_parser
from common.rundir import create_run_dir
from common.runtime import setup_runtime
from common.seed import loader_seed_kwargs
from common.tracking import write_eval_tables
from prior.data import FIVE_CLASSES, ImageDataset, PretrainDataset
from prior.engine import make_optimizer, make_scheduler
from prior.models import build_image_encoder
from prior.pipeline import FIVE_IDX, prepare_data, zeroshot_set
from prior.settings import Config, StageConfig

__all__ = ["main", "run_upper_bound"]

PROJECT_DIR = Path(__file__).resolve().parent


class _Labelled(torch.utils.data.Dataset):
    """The pre-training dataset's augmented image with the five labels of its study."""

    def __init__(self, base: PretrainDataset, labels: np.ndarray):
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        item = self.base[index]
        return item["image"], torch.as_tensor(self.labels[index], dtype=torch.float32)


def run_upper_bound(cfg: Config) -> dict[str, float]:
    device = setup_runtime(cfg.runtime, cfg.seed)
    data = prepare_data(cfg)
    labels = np.stack([[float(s.labels[col] == 1) for _, col in FIVE_IDX] for s in data.train])
    a = cfg.augment
    base = PretrainDataset(data.train, cfg.data.image_size, cfg.data.mean, cfg.data.std, augment=True,
                           degrees=a.degrees, hflip=a.hflip, hflip_p=a.hflip_p, seed=cfg.seed)
    loader = DataLoader(_Labelled(base, labels), batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True,
                        **loader_seed_kwargs(cfg.seed, 0))
    encoder = build_image_encoder(cfg.model, cfg.data.image_size).to(device)
    head = nn.Linear(encoder.width, len(FIVE_CLASSES)).to(device)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    first = cfg.optim.stages[0]
    schedule = StageConfig(cfg.optim.epochs, first.lr, first.lr_start, first.warmup_epochs)
    optimizer = make_optimizer(model.parameters(), first.lr, cfg.optim.weight_decay)
    scheduler = make_scheduler(optimizer, schedule, len(loader))
    out = create_run_dir("prior", f"{cfg.experiment}-upper", cfg, root=cfg.runs_root)
    tic = time.process_time()
    for epoch in range(cfg.optim.epochs):
        base.set_epoch(epoch)
        model.train()
        total = 0.0
        for images, target in loader:
            _, pooled = encoder(images.to(device))
            loss = F.binary_cross_entropy_with_logits(head(pooled), target.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1} bce {total / len(loader):.4f}", flush=True)
    paths, y = zeroshot_set(cfg)
    test = DataLoader(ImageDataset(paths, list(y), cfg.data.image_size, cfg.data.mean, cfg.data.std),
                      batch_size=64, shuffle=False)
    model.eval()
    logits = []
    with torch.no_grad():
        for images, _, _ in test:
            logits.append(head(encoder(images.to(device))[1]).float().cpu())
    pred = torch.cat(logits).argmax(1).numpy()
    summary = {"upper_zeroshot_accuracy": float(accuracy_score(y, pred)),
               "upper_zeroshot_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
               "cpu_seconds": time.process_time() - tic}
    per_class = {f"upper_acc_{c.replace(' ', '_').lower()}": float((pred[y == k] == k).mean())
                 for k, c in enumerate(FIVE_CLASSES)}
    summary |= per_class
    write_eval_tables(out.eval, summary, [{"image": str(p), "label": FIVE_CLASSES[int(t)],
                                           "prediction": FIVE_CLASSES[int(q)]} for p, t, q in zip(paths, y, pred)])
    print("upper bound: " + " ".join(f"{k} {v:.3f}" for k, v in summary.items()) + f" ({out.path})")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = train_parser("Supervised upper bound of the synthetic zero-shot task [ours]")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    if args.resume or args.init_weights:
        parser.error("upper_bound.py trains from scratch in one go: --resume / --init-weights do not apply")
    return run_upper_bound(cfg)


if __name__ == "__main__":
    main()
