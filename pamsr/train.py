"""Train a PAMSR super-resolution network (official ``src/main.py`` + ``trainer_burst_ema.py``; spec section 2).

Adam (lr 1e-4), MultiStepLR, batch 8 of LR 64x64 patches chosen by gradient-based patch selection, displacement
augmentation of the LR, L1 (+ optional scanning-consistency loss), validation PSNR on the held-out fold after every
epoch with early stopping (``optim.patience`` epochs without a new best). x4/x8 start from an x2 checkpoint
(``model.init_from``, non-strict: the upsampler tensors that differ are skipped).

    python train.py --config configs/default.yaml [--resume auto|PATH] [--init-weights PATH] [key=value ...]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    load_init_weights,
    restore_training_state,
    save_checkpoint,
)
from common.config import build_arg_parser, parse_cli, to_dict
from common.rundir import create_run_dir, latest_run, resolve_path
from common.runtime import init_distributed, make_grad_scaler, make_sampler, maybe_compile, pick_device, wrap_ddp
from common.seed import loader_seed_kwargs, seed_everything
from common.tracking import Tracker, plot_curves
from common.weights import load_pretrained
from pamsr.data import TrainPatches, load_images, prepare_data
from pamsr.engine import evaluate, train_one_epoch
from pamsr.losses import RecLoss, SRLoss
from pamsr.models import build_model, count_parameters
from pamsr.settings import Config

__all__ = ["PROJECT_DIR", "SWINIR_SOURCE", "resolve_init_from", "run_training", "main"]

PROJECT_DIR = Path(__file__).resolve().parent
SWINIR_SOURCE = ("001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth (github.com/JingyunLiang/SwinIR releases, v0.0); "
                 "re-save its `params` dict with torch.save so that it loads as a plain state dict")


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


def _init_model(model: torch.nn.Module, cfg: Config, init_weights: str | None) -> None:
    if cfg.model.pretrained != "none":
        report = load_pretrained(model, cfg.model.pretrained, what="SwinIR-M (classical SR, DF2K)",
                                 source=SWINIR_SOURCE)
        print(f"pretrained weights: {report}")
    for path in (resolve_init_from(cfg), init_weights):
        if path:
            report = load_init_weights(model, resolve_path(path))
            print(f"init weights from {path}: skipped (shape) {report['shape_mismatch']}, missing {report['missing']}")


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None, progress: bool = True
                 ) -> Path:
    """Train with ``cfg``; returns the run folder (``checkpoints/{last,best}.pt``, ``metrics.csv``, ...)."""
    info = init_distributed()
    seed_everything(cfg.seed, info.rank, cfg.runtime.deterministic)
    device = pick_device(cfg.runtime.device, info.local_rank)
    if cfg.model.name == "bicubic":
        raise ValueError("model.name=bicubic has nothing to train; evaluate it directly with eval.py")
    prepare_data(cfg)
    train_images = load_images(cfg.data, "train")
    test_images = load_images(cfg.data, "test", cfg.data.test_dataset)
    pad, scale = cfg.data.pad, cfg.data.scale

    model = build_model(cfg.model, scale, cfg.data.patch_size).to(device)
    rec = None
    if cfg.loss.rec > 0:
        h, w = train_images[0].hr.shape
        rec = RecLoss(h - 2 * pad, w - 2 * pad, pad).to(device)
    loss_fn = SRLoss(cfg.loss.l1, cfg.loss.rec, rec)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.optim.decay),
                                                     gamma=cfg.optim.gamma)
    scaler = make_grad_scaler(device, cfg.runtime.amp)

    experiment_dir = resolve_path(cfg.runs_root) / "pamsr" / cfg.experiment
    resume_path = find_resume_checkpoint(resume, experiment_dir)
    start_epoch, step, best, best_epoch = 0, 0, None, -1
    if resume_path is not None:
        run = create_run_dir("pamsr", cfg.experiment, cfg, root=cfg.runs_root, device=device,
                             existing=resume_path.parent.parent)
        ckpt = load_checkpoint(resume_path)
        start_epoch, step, best = restore_training_state(ckpt, model=model, optimizer=optimizer,
                                                         scheduler=scheduler, scaler=scaler)
        best_epoch = int(ckpt.get("extra", {}).get("best_epoch", start_epoch - 1))
        print(f"resumed from {resume_path} at epoch {start_epoch}")
    else:
        run = create_run_dir("pamsr", cfg.experiment, cfg, root=cfg.runs_root, device=device)
        _init_model(model, cfg, init_weights)
    print(f"{cfg.model.name}: {count_parameters(model):,} parameters; {len(train_images)} train / "
          f"{len(test_images)} test images; run folder {run.path}")

    dataset = TrainPatches(train_images, cfg.data, seed=cfg.seed)
    sampler = make_sampler(dataset, shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.data.num_workers, drop_last=len(dataset) >= cfg.optim.batch_size,
                        **loader_seed_kwargs(cfg.seed, info.rank))
    train_model = maybe_compile(wrap_ddp(model, device), cfg.runtime.compile)
    config_dict = to_dict(cfg)
    tracker = Tracker(run.path)
    for epoch in range(start_epoch, cfg.optim.epochs):
        tic = time.time()
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(train_model, loader, loss_fn, optimizer, device, cfg.runtime.amp, scaler,
                                cfg.optim.grad_clip, progress=progress and info.is_main)
        step += int(stats.pop("steps"))
        scheduler.step()
        log = {f"train/{k}": v for k, v in stats.items()} | {"train/lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval.val_every == 0 or epoch + 1 == cfg.optim.epochs:
            rows, _ = evaluate(model, test_images, scale, pad, device, tiled=cfg.eval.tiled, tile=cfg.eval.tile,
                               overlap=cfg.eval.val_tile_overlap, cartesian=False, amp=cfg.runtime.amp)
            val_psnr = float(np.mean([r["psnr"] for r in rows]))
            log |= {"val/psnr": val_psnr, "val/ssim": float(np.mean([r["ssim"] for r in rows]))}
            if best is None or val_psnr > best:
                best, best_epoch = val_psnr, epoch
                if info.is_main:
                    save_checkpoint(run.checkpoints / "best.pt", model=model, config=config_dict, epoch=epoch + 1,
                                    step=step, best_metric=best, extra={"best_epoch": best_epoch})
        tracker.log(log, step=epoch + 1)
        if info.is_main:
            save_checkpoint(run.checkpoints / "last.pt", model=model, config=config_dict, epoch=epoch + 1, step=step,
                            best_metric=best, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            extra={"best_epoch": best_epoch})
            print(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {stats.get('loss', float('nan')):.4f} "
                  f"val psnr {log.get('val/psnr', float('nan')):.2f} (best {best if best is not None else 0:.2f} "
                  f"@ {best_epoch + 1}) {time.time() - tic:.1f}s", flush=True)
        if epoch - best_epoch >= cfg.optim.patience:
            print(f"early stop: {cfg.optim.patience} epochs without a new best validation PSNR")
            break
    tracker.close()
    if info.is_main and run.metrics_csv.is_file():
        try:
            plot_curves(run.metrics_csv, ["train/loss"], run.figures / "train_loss.png")
            plot_curves(run.metrics_csv, ["val/psnr"], run.figures / "val_psnr.png")
        except KeyError:
            pass
    return run.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = build_arg_parser("Train PAMSR (SwinIR with registration, displacement degradation, patch selection)")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    return run_training(cfg, args.resume, args.init_weights)


if __name__ == "__main__":
    main()
