"""Train the UNO-QA low-quality representation module on outstanding images only (UNO-QA abstract; our recipe).

Stages: (optional, our no-weights path) VICReg pre-training of the backbone on the outstanding images -> frozen
backbone -> memory bank initialised from the adapted patch embeddings -> per epoch: adaptors trained with the
compactness objective, bank refreshed, compactness loss on the held-out 10 % of outstanding images (early stopping)
-> held-out scores s(x) stored in ``best.pt``, from which evaluation derives tau (95th percentile).

    python train.py [--config configs/default.yaml] [--data-root DIR] [--resume auto|PATH] [--init-weights PATH]
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import load_checkpoint, load_init_weights, restore_training_state, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import to_dict
from common.rundir import RunDir, check_writable, open_run, resolve_path
from common.runtime import barrier, cleanup_distributed, is_main_process, main_process_first, setup_runtime, wrap_ddp
from common.seed import seed_loader_epoch
from common.tracking import Tracker, image_grid, plot_curves
from octa_iqa.data import QualityDataset
from octa_iqa.engine import collect_patches, evaluate_loss, score_loader, stack_images, train_one_epoch
from octa_iqa.model import LowQualityRepresentation, build_model, count_trainable, fit_bank
from octa_iqa.pipeline import PreparedData, TrainLoaders, build_loaders, cache_frozen_features, prepare_data
from octa_iqa.selfsup import pretrain_backbone
from octa_iqa.settings import Config

__all__ = ["PROJECT_DIR", "TrainState", "run_training", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


@dataclass
class TrainState:
    """What an epoch depends on besides the weights: epoch, step, best held-out loss and the checkpoint extras."""

    epoch: int = 0
    step: int = 0
    best: float = math.inf
    extra: dict = field(default_factory=lambda: {"bad_epochs": 0, "weights_sha256": "", "selfsup_history": []})


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bank_patches(cfg: Config) -> int | None:
    """k-means sees a seeded sub-sample of ``bank.fit_patches`` patches; the coreset selects from all of them."""
    return cfg.bank.fit_patches if cfg.bank.kind == "kmeans" else None


def _save(run: RunDir, name: str, model, optimizer, cfg: Config, state: TrainState) -> None:
    """Rank 0 writes; every rank waits until the file is complete (the others read ``best.pt`` at the end)."""
    if is_main_process():
        save_checkpoint(run.checkpoints / name, model=model, config=to_dict(cfg), epoch=state.epoch, step=state.step,
                        best_metric=state.best, optimizer=optimizer, extra=state.extra)
    barrier()


def initialise(model: LowQualityRepresentation, cfg: Config, loaders: TrainLoaders, tracker: Tracker,
               init_weights: str | None, device: torch.device, state: TrainState) -> TrainLoaders:
    """Fresh run: backbone weights (``--init-weights`` or VICReg), cached frozen features, first memory bank."""
    if cfg.model.pretrained not in ("none", "selfsup", "hub") and Path(cfg.model.pretrained).is_file():
        state.extra["weights_sha256"] = _sha256(cfg.model.pretrained)
    if init_weights:
        report = load_init_weights(model, resolve_path(init_weights))
        print(f"[train] init weights {init_weights}: missing {len(report['missing'])}, "
              f"shape mismatch {report['shape_mismatch']}", flush=True)
    elif cfg.model.pretrained == "selfsup":
        tic = time.time()
        history = pretrain_backbone(model.backbone, stack_images(loaders.fit.dataset), cfg.model.selfsup, device,
                                    cfg.seed, progress=cfg.runtime.progress)
        state.extra["selfsup_history"] = [h["loss"] for h in history]
        for i, h in enumerate(history):
            tracker.log({f"selfsup/{k}": v for k, v in h.items()}, step=i - len(history))
        print(f"[train] self-supervised backbone: {time.time() - tic:.0f}s", flush=True)
    loaders = cache_frozen_features(model, cfg, loaders, device)
    points = collect_patches(model, loaders.fit, device, _bank_patches(cfg), cfg.seed)
    model.scale.fill_(float(points.std(dim=0).mean()))
    model.set_bank(fit_bank(points, cfg.bank, cfg.seed))
    state.best = evaluate_loss(model, loaders.hold, cfg.loss, device)
    return loaders


def resume_state(path: Path, model, optimizer) -> TrainState:
    ckpt = load_checkpoint(path)
    epoch, step, best = restore_training_state(ckpt, model=model, optimizer=optimizer)
    state = TrainState(epoch, step, math.inf if best is None else best)
    state.extra.update(ckpt.get("extra", {}))
    return state


def fit_adaptors(model, optimizer, loaders: TrainLoaders, cfg: Config, run: RunDir, tracker: Tracker,
                 state: TrainState, device: torch.device) -> None:
    """The epoch loop: adaptors (DDP-wrapped under torchrun), bank refresh, held-out compactness, early stopping,
    best/last checkpoints."""
    epochs = cfg.optim.epochs if cfg.model.train_head else 0
    adaptors = wrap_ddp(model.adaptors, device)
    for epoch in tqdm(range(state.epoch, epochs), desc="epochs", disable=not cfg.runtime.progress):
        if state.extra["bad_epochs"] >= cfg.optim.patience:
            break
        tic = time.time()
        seed_loader_epoch(loaders.train, cfg.seed, epoch)
        terms = train_one_epoch(model, loaders.train, optimizer, cfg.loss, device, adaptors, cfg.runtime.progress)
        state.epoch, state.step = epoch + 1, state.step + len(loaders.train)
        points = collect_patches(model, loaders.fit, device, _bank_patches(cfg), cfg.seed + epoch + 1)
        model.set_bank(fit_bank(points, cfg.bank, cfg.seed + epoch + 1, previous=model.bank))
        val = evaluate_loss(model, loaders.hold, cfg.loss, device)
        improved = val < state.best
        if improved:
            state.best, state.extra["bad_epochs"] = val, 0
            _save(run, "best.pt", model, optimizer, cfg, state)
        else:
            state.extra["bad_epochs"] += 1
        _save(run, "last.pt", model, optimizer, cfg, state)
        tracker.log({**{f"train/{k}": v for k, v in terms.items()}, "val/compactness": val,
                     "train/iterations": state.step}, step=epoch + 1)
        print(f"[train] epoch {epoch + 1}/{epochs} loss={terms['loss']:.4f} compact={terms['compact']:.4f} "
              f"hinge={terms['hinge']:.4f} var={terms['variance']:.4f} val={val:.4f}{' *' if improved else ''} "
              f"({time.time() - tic:.0f}s)", flush=True)


def finalise(model, loaders: TrainLoaders, cfg: Config, run: RunDir, tracker: Tracker, device: torch.device) -> None:
    """Reload the best model, fit the image-level term on the fit images, put both terms on the held-out scale and
    store the held-out scores s(x) (tau is derived from them); anomaly-map figure."""
    best = load_checkpoint(run.checkpoints / "best.pt")
    model.load_state_dict(best["model"])
    top, agg, bars = cfg.threshold.top_fraction, cfg.threshold.aggregate, cfg.runtime.progress
    model.fit_image_term(score_loader(model, loaders.fit, device, top, agg, progress=bars).pooled)
    held = score_loader(model, loaders.hold, device, top, agg, progress=bars)
    model.set_term_stats(held.patch_term, held.image_term)
    held = score_loader(model, loaders.hold, device, top, agg, cfg.threshold.image_weight, cfg.threshold.two_sided,
                        bars)
    if not is_main_process():
        return
    extra = {**best["extra"], "holdout_scores": torch.from_numpy(held.scores.astype(np.float64)),
             "holdout_patch_term": torch.from_numpy(held.patch_term.astype(np.float64)),
             "holdout_image_term": torch.from_numpy(held.image_term.astype(np.float64))}
    save_checkpoint(run.checkpoints / "best.pt", model=model, config=to_dict(cfg), epoch=best["epoch"],
                    step=best["step"], best_metric=best["best_metric"], extra=extra)
    shown = QualityDataset(loaders.hold_records[:6], cfg.data, cfg.model.pretrained)
    rows = [[img[0].numpy(), held.maps[i]] for i, img in enumerate(stack_images(shown))]
    if rows:
        tracker.log_image("holdout/image_and_patch_scores", image_grid(rows), best["epoch"],
                          run.figures / "holdout_patch_scores.png")
    if run.metrics_csv.is_file() and cfg.optim.epochs > 0 and cfg.model.train_head:
        plot_curves(run.metrics_csv, ["train/compact", "val/compactness"], run.figures / "loss.png")


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None,
                 data: PreparedData | None = None) -> Path:
    """Train with ``cfg``; returns the run folder (``checkpoints/{last,best}.pt`` carry bank + held-out scores).
    ``data``: splits already prepared and checked by the caller (``reproduce.py``), else prepared here."""
    check_writable(cfg.runs_root)
    device = setup_runtime(cfg.runtime, cfg.seed)  # under torchrun: the process group (gloo on CPU, nccl on CUDA)
    with main_process_first():  # rank 0 generates the synthetic set, the others then only read and check it
        data = data or prepare_data(cfg)  # every image checked before any run folder exists
    opened = open_run("octa_iqa", cfg, resume=resume, device=device)  # rank 0 names the folder, all ranks share it
    run = opened.run
    torch.manual_seed(cfg.seed)  # the same backbone and adaptor initialisation on every rank
    model = build_model(cfg.model, "none" if opened.resume_from else None).to(device)
    loaders = build_loaders(cfg, data.train)
    optimizer = torch.optim.Adam(model.adaptors.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    with Tracker(run.path) as tracker:
        if opened.resume_from is not None:
            state = resume_state(opened.resume_from, model, optimizer)
            loaders = cache_frozen_features(model, cfg, loaders, device)
        else:
            state = TrainState()
            loaders = initialise(model, cfg, loaders, tracker, init_weights, device, state)
            _save(run, "best.pt", model, optimizer, cfg, state)
            _save(run, "last.pt", model, optimizer, cfg, state)
        print(f"[train] trainable parameters (adaptors): {count_trainable(model)}; bank {tuple(model.bank.shape)}",
              flush=True)
        fit_adaptors(model, optimizer, loaders, cfg, run, tracker, state, device)
        finalise(model, loaders, cfg, run, tracker, device)
    print(f"[train] done: {run.path}", flush=True)
    return run.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = train_parser("UNO-QA: train the low-quality representation module on outstanding images")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    try:
        return run_training(cfg, resume=args.resume, init_weights=args.init_weights)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
