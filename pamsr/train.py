"""Train a PAMSR super-resolution network (official ``src/main.py`` + ``src/trainer_burst_ema.py``).

Adam (lr 1e-4), MultiStepLR, batch 8 of LR 64x64 patches chosen by gradient-based patch selection, displacement
augmentation of the LR, L1 (+ optional scanning-consistency loss), validation PSNR on the held-out fold after every
epoch with early stopping (``optim.patience`` epochs without a new best). x4/x8 start from an x2 checkpoint
(``model.init_from``, non-strict: the upsampler tensors that differ are skipped).

    python train.py [--config configs/default.yaml] [--data-root DIR] [--resume auto|PATH] [--init-weights PATH]
                    [key=value ...]
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoint import load_checkpoint, load_init_weights, restore_training_state, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import to_dict
from common.rundir import RunDir, latest_run, open_run, resolve_path
from common.runtime import (
    all_gather_arrays,
    dist_info,
    make_grad_scaler,
    maybe_compile,
    setup_runtime,
    shard,
    wrap_ddp,
)
from common.seed import seed_loader_epoch
from common.tracking import Tracker, plot_curves
from common.weights import load_pretrained
from pamsr.engine import WeightEMA, evaluate, train_one_epoch
from pamsr.figures import crop_grid, nearest_upsample
from pamsr.losses import RecLoss, SRLoss
from pamsr.models import build_model, count_parameters
from pamsr.pipeline import Splits, load_splits, make_train_loader, prepare_data
from pamsr.settings import PROJECT_DIR, Config, OptimConfig

__all__ = ["PROJECT_DIR", "SWINIR_SOURCE", "TrainState", "resolve_init_from", "run_training", "main"]

SWINIR_SOURCE = ("001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth (github.com/JingyunLiang/SwinIR releases, v0.0); "
                 "re-save its `params` dict with torch.save so that it loads as a plain state dict")


@dataclass
class TrainState:
    """What the next epoch depends on besides model/optimiser/scheduler/RNG states (all saved in ``last.pt``)."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = -1


@dataclass
class Session:
    """The objects one training run works with."""

    cfg: Config
    device: torch.device
    run: RunDir
    splits: Splits
    model: torch.nn.Module
    train_model: torch.nn.Module
    loss_fn: SRLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    tracker: Tracker
    ema: WeightEMA | None = None

    def extra(self, state: TrainState) -> dict:
        """What the checkpoints hold besides the model: the best epoch and the EMA weights (``optim.ema``)."""
        return {"best_epoch": state.best_epoch} | ({"ema": self.ema.state_dict()} if self.ema else {})


def resolve_init_from(cfg: Config) -> Path | None:
    """``model.init_from``: a checkpoint path, or ``latest:<experiment>`` = best.pt of that experiment's newest run
    (the progressive x2 -> x4/x8 initialisation of the official code)."""
    spec = cfg.model.init_from
    if not spec:
        return None
    if spec.startswith("latest:"):
        experiment = spec.split(":", 1)[1]
        run = latest_run("pamsr", experiment, root=cfg.runs_root, require="checkpoints/best.pt")
        if run is None:
            raise FileNotFoundError(f"model.init_from={spec}: no run of experiment `{experiment}` under "
                                    f"{resolve_path(cfg.runs_root) / 'pamsr'} has checkpoints/best.pt; train it first "
                                    f"(python train.py --config configs/{experiment}.yaml) or give a checkpoint path")
        return run / "checkpoints" / "best.pt"
    return resolve_path(spec)


def initialise_weights(model: torch.nn.Module, cfg: Config, init_weights: str | None) -> None:
    """Fresh run: optional pretrained SwinIR-M weights, then ``model.init_from`` and ``--init-weights`` (non-strict)."""
    if cfg.model.pretrained != "none":
        report = load_pretrained(model, cfg.model.pretrained, what="SwinIR-M (classical SR, DF2K)",
                                 source=SWINIR_SOURCE)
        print(f"pretrained weights: {report}")
    for path in (resolve_init_from(cfg), init_weights):
        if path:
            report = load_init_weights(model, resolve_path(path))
            print(f"init weights from {path}: skipped (shape) {report['shape_mismatch']}, missing {report['missing']}")


def build_loss(cfg: Config, splits: Splits, device: torch.device) -> SRLoss:
    """``loss.l1 * L1 + loss.rec * RecLoss`` (the rec loss needs the padded polar geometry of the training images)."""
    rec = None
    if cfg.loss.rec > 0:
        h, w = splits.train[0].hr.shape
        rec = RecLoss(h - 2 * cfg.data.pad, w - 2 * cfg.data.pad, cfg.data.pad).to(device)
    return SRLoss(cfg.loss.l1, cfg.loss.rec, rec)


def lr_factor(optim: OptimConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step lr factor: linear warm-up over ``optim.warmup_steps``, then MultiStepLR on epoch milestones (official
    ``src/utility.py::make_optimizer``; the same lr as stepping MultiStepLR once per epoch) or a cosine decay."""
    total = max(optim.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
        if optim.schedule == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
        return warm * optim.gamma ** bisect.bisect_right(sorted(optim.decay), step // steps_per_epoch)

    return factor


def build_optimiser(optim: OptimConfig, model: torch.nn.Module, steps_per_epoch: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam + a per-step LambdaLR (:func:`lr_factor`)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                 weight_decay=optim.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, max(steps_per_epoch, 1)))


def start_or_resume(session: Session, resume_from: Path | None, init_weights: str | None) -> TrainState:
    """Restore model, optimiser, scheduler, scaler, RNG states, epoch, step and best from ``last.pt``, or
    initialise the weights of a fresh run."""
    if resume_from is None:
        initialise_weights(session.model, session.cfg, init_weights)
        return TrainState()
    ckpt = load_checkpoint(resume_from)
    epoch, step, best = restore_training_state(ckpt, model=session.model, optimizer=session.optimizer,
                                               scheduler=session.scheduler, scaler=session.scaler)
    if session.ema is not None:
        if "ema" not in ckpt.get("extra", {}):
            raise ValueError(f"{resume_from} holds no EMA weights (trained with optim.ema=0); resume with optim.ema=0")
        session.ema.load_state_dict(ckpt["extra"]["ema"])
    return TrainState(epoch, step, best, int(ckpt.get("extra", {}).get("best_epoch", epoch - 1)))


def validate(session: Session, state: TrainState, epoch: int) -> dict[str, float]:
    """Polar PSNR/SSIM on the validation fold (training-time overlap ``eval.val_tile_overlap``); keeps ``best.pt``
    and logs LR / SR / HR crops of the first validation image to TensorBoard. Under torchrun every rank evaluates
    its strided share of the images (``common.runtime.shard``) and the per-image metrics are gathered."""
    cfg, ev = session.cfg, session.cfg.eval
    rows, preds = evaluate(session.model, shard(session.splits.val), cfg.data.scale, cfg.data.pad, session.device,
                           tiled=ev.tiled, tile=ev.tile, overlap=ev.val_tile_overlap, cartesian=False,
                           amp=cfg.runtime.amp, keep_predictions=True,
                           progress=cfg.runtime.progress and dist_info().is_main)
    psnrs = all_gather_arrays(np.array([r["psnr"] for r in rows], dtype=np.float64))
    ssims = all_gather_arrays(np.array([r["ssim"] for r in rows], dtype=np.float64))
    psnr = float(np.mean(psnrs))
    if state.best is None or psnr > state.best:
        state.best, state.best_epoch = psnr, epoch
        if dist_info().is_main:
            save_checkpoint(session.run.checkpoints / "best.pt", model=session.model, config=to_dict(cfg),
                            epoch=epoch + 1, step=state.step, best_metric=psnr,
                            extra=session.extra(replace(state, best_epoch=epoch)))
    item = session.splits.val[0]  # in rank 0's share
    if item.name in preds:
        panels = {"lr": nearest_upsample(item.lr, cfg.data.scale), "sr": preds[item.name], "hr": item.hr}
        session.tracker.log_image("val/lr_sr_hr", crop_grid(panels, cfg.data.pad, min(128, item.hr.shape[0] // 2)),
                                  epoch + 1)
    return {"val/psnr": psnr, "val/ssim": float(np.mean(ssims)), "val/images": float(len(psnrs))}


def run_epoch(session: Session, state: TrainState, epoch: int) -> dict[str, float]:
    """One epoch: data order and patches a function of (seed, epoch), train, step the schedule, validate."""
    cfg = session.cfg
    seed_loader_epoch(session.loader, cfg.seed, epoch)
    session.loader.dataset.set_epoch(epoch)
    stats = train_one_epoch(session.train_model, session.loader, session.loss_fn, session.optimizer,
                            session.device, cfg.runtime.amp, session.scaler, cfg.optim.grad_clip,
                            progress=cfg.runtime.progress and dist_info().is_main,
                            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", scheduler=session.scheduler,
                            ema=session.ema)
    state.step += int(stats.pop("steps"))
    log = {f"train/{k}": v for k, v in stats.items()}
    log |= {"train/lr": session.optimizer.param_groups[0]["lr"], "train/step": float(state.step)}
    if (epoch + 1) % cfg.eval.val_every == 0 or epoch + 1 == cfg.optim.epochs:
        log |= validate(session, state, epoch)
    return log


def save_last(session: Session, state: TrainState, epoch: int) -> None:
    if dist_info().is_main:
        save_checkpoint(session.run.checkpoints / "last.pt", model=session.model, config=to_dict(session.cfg),
                        epoch=epoch + 1, step=state.step, best_metric=state.best, optimizer=session.optimizer,
                        scheduler=session.scheduler, scaler=session.scaler, extra=session.extra(state))


def fit(session: Session, state: TrainState) -> None:
    """The epoch loop from ``state.epoch`` to ``optim.epochs``, with early stopping on the validation PSNR."""
    cfg, is_main = session.cfg, dist_info().is_main
    epochs = range(state.epoch, cfg.optim.epochs)
    for epoch in tqdm(epochs, desc="epochs", disable=not (cfg.runtime.progress and is_main)):
        tic = time.time()
        log = run_epoch(session, state, epoch)
        session.tracker.log(log, step=epoch + 1)
        save_last(session, state, epoch)
        if is_main:
            tqdm.write(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {log.get('train/loss', float('nan')):.4f} "
                       f"val psnr {log.get('val/psnr', float('nan')):.2f} (best {state.best or 0:.2f} @ "
                       f"{state.best_epoch + 1}) {time.time() - tic:.1f}s")
        if epoch - state.best_epoch >= cfg.optim.patience:
            tqdm.write(f"early stop: {cfg.optim.patience} epochs without a new best validation PSNR")
            break


def finish(session: Session) -> None:
    session.tracker.close()
    if dist_info().is_main and session.run.metrics_csv.is_file():
        plot_curves(session.run.metrics_csv, ["train/loss"], session.run.figures / "train_loss.png")
        plot_curves(session.run.metrics_csv, ["val/psnr"], session.run.figures / "val_psnr.png")


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> Path:
    """Train with ``cfg``; returns the run folder (``checkpoints/{last,best}.pt``, ``metrics.csv``, ``tb/``, ...)."""
    if cfg.model.name == "bicubic":
        raise ValueError("model.name=bicubic has nothing to train; evaluate it directly with eval.py")
    device = setup_runtime(cfg.runtime, cfg.seed)
    prepare_data(cfg)  # the synthetic set on first use; every listed image checked before the run folder exists
    splits = load_splits(cfg)
    model = build_model(cfg.model, cfg.data.scale, cfg.data.patch_size).to(device)
    loader = make_train_loader(cfg, splits.train)
    optimizer, scheduler = build_optimiser(cfg.optim, model, len(loader))
    opened = open_run("pamsr", cfg, resume=resume, device=device)
    train_model = maybe_compile(wrap_ddp(model, device), cfg.runtime.compile)
    session = Session(cfg, device, opened.run, splits, model, train_model, build_loss(cfg, splits, device),
                      optimizer, scheduler, make_grad_scaler(device, cfg.runtime.amp), loader,
                      Tracker(opened.run.path), WeightEMA(model, cfg.optim.ema) if cfg.optim.ema > 0 else None)
    state = start_or_resume(session, opened.resume_from, init_weights)
    if dist_info().is_main:
        print(f"{cfg.model.name}: {count_parameters(model):,} parameters; {len(splits.train)} train / "
              f"{len(splits.val)} validation / {len(splits.test)} test images; starting at epoch {state.epoch + 1} "
              f"of {cfg.optim.epochs}")
    fit(session, state)
    finish(session)
    return opened.run.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = train_parser("Train PAMSR (SwinIR with registration, displacement degradation, patch selection)")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    return run_training(cfg, args.resume, args.init_weights)


if __name__ == "__main__":
    main()
