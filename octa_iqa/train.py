"""Train the UNO-QA low-quality representation module on outstanding images only (abstract; spec 1.2 C, section 2).

Stages: (optional, our no-weights path) VICReg pre-training of the backbone on the outstanding images -> frozen
backbone -> memory bank initialised from the adapted patch embeddings -> per epoch: adaptors trained with the
compactness objective, bank refreshed, compactness loss on the held-out 10 % of outstanding images (early stopping)
-> held-out scores s(x) stored in the checkpoint, from which eval derives tau (95th percentile).

    python train.py --config configs/default.yaml [--resume auto|PATH] [--init-weights PATH] [key=value ...]
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    load_init_weights,
    restore_training_state,
    save_checkpoint,
)
from common.config import build_arg_parser, parse_cli, to_dict
from common.rundir import create_run_dir, resolve_path
from common.runtime import pick_device
from common.seed import seed_everything
from common.tracking import Tracker, plot_curves
from octa_iqa.data import QualityDataset, format_counts, load_records, prepare_data, split_outstanding
from octa_iqa.engine import (
    cache_features,
    collect_patches,
    evaluate_loss,
    make_loader,
    score_loader,
    stack_images,
    train_one_epoch,
)
from octa_iqa.model import LowQualityRepresentation, build_backbone, count_trainable, fit_bank
from octa_iqa.selfsup import pretrain_backbone
from octa_iqa.settings import Config

__all__ = ["PROJECT_DIR", "build_model", "assert_outstanding_only", "run_training", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def build_model(cfg: Config, weights: str | None = None) -> LowQualityRepresentation:
    """Backbone (``weights`` overrides ``model.pretrained``; pass ``"none"`` when a checkpoint will be loaded) +
    adaptors + an empty bank."""
    return LowQualityRepresentation(build_backbone(cfg.model, weights), cfg.model.adaptor_dim,
                                    cfg.model.aggregation_kernel)


def assert_outstanding_only(loader: torch.utils.data.DataLoader) -> None:
    """Refuse to train if any record behind the loader is not outstanding (label 2): the anomaly setting."""
    labels = {r.label for r in loader.dataset.records}
    if labels != {2}:
        raise RuntimeError(f"training loader holds labels {sorted(labels)}; UNO-QA trains on outstanding (2) only")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bank_patches(cfg: Config) -> int | None:
    """k-means sees a seeded sub-sample of ``bank.fit_patches`` patches; the coreset selects from all of them."""
    return cfg.bank.fit_patches if cfg.bank.kind == "kmeans" else None


def _cached(model: LowQualityRepresentation, cfg: Config, fit_loader, hold_loader, train_loader, device):
    """The backbone is frozen from here on: compute its features once for the un-augmented loaders (and for
    training too when ``data.augment`` is off)."""
    fit_cache = cache_features(model, fit_loader, device)
    hold_cache = cache_features(model, hold_loader, device)
    bs, workers = cfg.optim.batch_size, cfg.data.num_workers
    fit_loader = make_loader(fit_cache, bs, False, cfg.seed, workers)
    hold_loader = make_loader(hold_cache, bs, False, cfg.seed, workers)
    if not cfg.data.augment:
        train_loader = make_loader(fit_cache, bs, True, cfg.seed, workers)
    return fit_loader, hold_loader, train_loader


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> Path:
    """Train with ``cfg``; returns the run folder (``checkpoints/{last,best}.pt`` carry bank + held-out scores)."""
    seed_everything(cfg.seed, deterministic=cfg.runtime.deterministic)
    device = pick_device(cfg.runtime.device)
    prepare_data(cfg)
    records = load_records(cfg.data, cfg.data.train_split)
    fit, hold = split_outstanding(records, cfg.data.holdout_fraction, cfg.data.split_seed)
    print(f"[train] outstanding only: fit {len(fit)}, held-out {len(hold)} "
          f"(ignored non-outstanding: {format_counts([r for r in records if r.label != 2])})", flush=True)
    experiment_dir = resolve_path(cfg.runs_root) / "octa_iqa" / cfg.experiment
    resume_path = find_resume_checkpoint(resume, experiment_dir)
    weights_sha = None
    if cfg.model.pretrained not in ("none", "selfsup", "hub") and Path(cfg.model.pretrained).is_file():
        weights_sha = _sha256(cfg.model.pretrained)
    run = create_run_dir("octa_iqa", cfg.experiment, cfg, root=cfg.runs_root, device=device,
                         existing=resume_path.parent.parent if resume_path else None)
    model = build_model(cfg, "none" if resume_path else None).to(device)
    pretrained = cfg.model.pretrained
    train_loader = make_loader(QualityDataset(fit, cfg.data, pretrained, augment=cfg.data.augment, seed=cfg.seed),
                               cfg.optim.batch_size, True, cfg.seed, cfg.data.num_workers)
    fit_loader = make_loader(QualityDataset(fit, cfg.data, pretrained), cfg.optim.batch_size, False, cfg.seed,
                             cfg.data.num_workers)
    hold_loader = make_loader(QualityDataset(hold, cfg.data, pretrained), cfg.optim.batch_size, False, cfg.seed,
                              cfg.data.num_workers)
    for loader in (train_loader, fit_loader, hold_loader):
        assert_outstanding_only(loader)
    optimizer = torch.optim.Adam(model.adaptors.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    config_dict = to_dict(cfg)
    extra: dict = {"bad_epochs": 0, "weights_sha256": weights_sha or "", "selfsup_history": []}
    start_epoch, step, best = 0, 0, math.inf

    def save(name: str, epoch: int) -> None:
        save_checkpoint(run.checkpoints / name, model=model, config=config_dict, epoch=epoch, step=step,
                        best_metric=best, optimizer=optimizer, extra=extra)

    tracker = Tracker(run.path)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        start_epoch, step, best_metric = restore_training_state(ckpt, model=model, optimizer=optimizer)
        best = math.inf if best_metric is None else best_metric
        extra.update(ckpt.get("extra", {}))
        print(f"[train] resumed from {resume_path} at epoch {start_epoch}", flush=True)
        fit_loader, hold_loader, train_loader = _cached(model, cfg, fit_loader, hold_loader, train_loader, device)
    else:
        if init_weights:
            report = load_init_weights(model, resolve_path(init_weights))
            print(f"[train] init weights {init_weights}: missing {len(report['missing'])}, "
                  f"shape mismatch {report['shape_mismatch']}", flush=True)
        elif pretrained == "selfsup":
            tic = time.time()
            history = pretrain_backbone(model.backbone, stack_images(fit_loader.dataset), cfg.model.selfsup, device,
                                        cfg.seed)
            extra["selfsup_history"] = [h["loss"] for h in history]
            for i, h in enumerate(history):
                tracker.log({f"selfsup/{k}": v for k, v in h.items()}, step=i - len(history))
            print(f"[train] self-supervised backbone: {time.time() - tic:.0f}s", flush=True)
        fit_loader, hold_loader, train_loader = _cached(model, cfg, fit_loader, hold_loader, train_loader, device)
        points = collect_patches(model, fit_loader, device, _bank_patches(cfg), cfg.seed)
        model.scale.fill_(float(points.std(dim=0).mean()))
        model.set_bank(fit_bank(points, cfg.bank, cfg.seed))
        best = evaluate_loss(model, hold_loader, cfg.loss, device)
        save("best.pt", 0)
        save("last.pt", 0)
    print(f"[train] trainable parameters (adaptors): {count_trainable(model)}; bank {tuple(model.bank.shape)}",
          flush=True)

    epochs = cfg.optim.epochs if cfg.model.train_head else 0
    for epoch in range(start_epoch, epochs):
        if extra["bad_epochs"] >= cfg.optim.patience:
            break
        tic = time.time()
        terms = train_one_epoch(model, train_loader, optimizer, cfg.loss, device)
        step += len(train_loader)
        points = collect_patches(model, fit_loader, device, _bank_patches(cfg), cfg.seed + epoch + 1)
        model.set_bank(fit_bank(points, cfg.bank, cfg.seed + epoch + 1, previous=model.bank))
        val = evaluate_loss(model, hold_loader, cfg.loss, device)
        improved = val < best
        if improved:
            best, extra["bad_epochs"] = val, 0
            save("best.pt", epoch + 1)
        else:
            extra["bad_epochs"] += 1
        save("last.pt", epoch + 1)
        tracker.log({**{f"train/{k}": v for k, v in terms.items()}, "val/compactness": val}, step=epoch + 1)
        print(f"[train] epoch {epoch + 1}/{epochs} loss={terms['loss']:.4f} compact={terms['compact']:.4f} "
              f"hinge={terms['hinge']:.4f} var={terms['variance']:.4f} val={val:.4f}{' *' if improved else ''} "
              f"({time.time() - tic:.0f}s)", flush=True)

    # final: the best model's held-out scores define tau at evaluation time
    best_ckpt = load_checkpoint(run.checkpoints / "best.pt")
    model.load_state_dict(best_ckpt["model"])
    held = score_loader(model, hold_loader, device, cfg.threshold.top_fraction, cfg.threshold.aggregate)
    extra["holdout_scores"] = torch.from_numpy(held.scores.astype(np.float64))
    save_checkpoint(run.checkpoints / "best.pt", model=model, config=config_dict, epoch=best_ckpt["epoch"],
                    step=best_ckpt["step"], best_metric=best, extra=extra)
    tracker.close()
    if epochs > 0 and run.metrics_csv.is_file():
        with contextlib.suppress(KeyError):
            plot_curves(run.metrics_csv, ["train/compact", "val/compactness"], run.figures / "loss.png")
    print(f"[train] done: {run.path}", flush=True)
    return run.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = build_arg_parser("UNO-QA: train the low-quality representation module on outstanding images")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    return run_training(cfg, resume=args.resume, init_weights=args.init_weights)


if __name__ == "__main__":
    main()
