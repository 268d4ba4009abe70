"""Pre-train PRIOR: three stages with an optimizer and schedule rebuilt at every stage start (official
``codes/scripts/pre_train.py`` + ``models/prior.py``), then zero-shot and retrieval on the CheXpert 5x200 set.

    python train.py [--config configs/default.yaml] [--resume auto|PATH] [--init-weights PATH] [key=value ...]

Writes ``checkpoints/{last,stage2_start,stage3_start}.pt`` (the stage checkpoints hold the weights at the first
epoch of stages 2 and 3), ``metrics.csv`` (one row per epoch), ``eval/summary.csv`` and ``figures/``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint, load_init_weights, restore_training_state, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import to_dict
from common.rundir import RunDir, open_run
from common.runtime import dist_info, make_grad_scaler, setup_runtime, unwrap_model, wrap_ddp
from common.seed import seed_loader_epoch
from common.tracking import Tracker, plot_curves, write_eval_tables
from prior.engine import (
    collect_sentence_embeddings,
    make_optimizer,
    make_scheduler,
    stage_of_epoch,
    stage_start_epochs,
    train_one_epoch,
)
from prior.evaluation import evaluate_pretrained
from prior.models import build_model, count_parameters
from prior.models.spb import kmeans_codes
from prior.pipeline import prepare_data, pretrain_loader
from prior.reports import swap_left_right
from prior.settings import Config

__all__ = ["PROJECT_DIR", "run_training", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def _stage_optimizer(model, cfg: Config, stage: int, iters: int):
    optimizer = make_optimizer(model.parameters(), cfg.optim.stages[stage - 1].lr, cfg.optim.weight_decay)
    return optimizer, make_scheduler(optimizer, cfg.optim.stages[stage - 1], iters)


def _begin_stage(model, cfg: Config, stage: int, loader, device, run: RunDir, epoch: int) -> None:
    """At the first epoch of stages 2 and 3: save ``stage<k>_start.pt`` (weights) and, for stage 2 with
    ``spb.kmeans_init``, initialise the prototypes by k-means of the sentence embeddings [ours]."""
    if stage == 2 and cfg.model.spb.kmeans_init and model.losses["spb"]:
        codes = kmeans_codes(collect_sentence_embeddings(model, loader, device), cfg.model.spb.k, seed=cfg.seed)
        model.sentence_bank.embed.weight.data.copy_(codes.to(device))
    if stage >= 2 and dist_info().is_main:
        save_checkpoint(run.checkpoints / f"stage{stage}_start.pt", model=model, config=to_dict(cfg), epoch=epoch,
                        step=0, extra={"stage": stage})


def _restore(ckpt_path: Path, model, cfg: Config, iters: int):
    """Resume: weights, RNG and (inside a stage) optimizer + schedule; at a stage start both are fresh."""
    ckpt = load_checkpoint(ckpt_path)
    epoch = int(ckpt["epoch"])
    if epoch >= cfg.optim.epochs:
        restore_training_state(ckpt, model=model)
        return epoch, int(ckpt["step"]), None, None
    stage, _ = stage_of_epoch(cfg.optim.stages, epoch)
    optimizer, scheduler = _stage_optimizer(model, cfg, stage, iters)
    at_start = epoch in stage_start_epochs(cfg.optim.stages)
    restore_training_state(ckpt, model=model, optimizer=None if at_start else optimizer,
                           scheduler=None if at_start else scheduler)
    return epoch, int(ckpt["step"]), optimizer, scheduler


def _log_epoch(tracker: Tracker, stats: dict, stage: int, epoch: int, lr: float, seconds: float) -> None:
    log = {f"stage{stage}/{k}": v for k, v in stats.items() if k != "steps"}
    log |= {"train/loss": stats.get("loss", float("nan")), "train/lr": lr, "train/stage": stage}
    tracker.log(log, step=epoch + 1)
    if dist_info().is_main:
        terms = " ".join(f"{k} {v:.3f}" for k, v in stats.items() if k not in ("steps", "loss"))
        print(f"epoch {epoch + 1} stage {stage} loss {stats.get('loss', float('nan')):.4f} ({terms}) "
              f"lr {lr:.2e} {seconds:.1f}s", flush=True)


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None,
                 evaluate: bool = True) -> Path:
    """Pre-train with ``cfg``; returns the run folder."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    data = prepare_data(cfg)
    model = build_model(cfg.model, cfg.data.image_size, cfg.loss.method, cfg.loss.global_weight_stage3).to(device)
    opened = open_run("prior", cfg, resume=resume, device=device)
    run, info = opened.run, dist_info()
    loader = pretrain_loader(cfg, data.train, info.rank)
    iters = len(loader)
    if cfg.model.text.mode == "sentence":
        every = {t for s in data.train for sentence in s.sentences for t in (sentence, swap_left_right(sentence))}
        print(f"cached features of {model.text_encoder.precompute(sorted(every))} distinct sentences")
    start, step, optimizer, scheduler = 0, 0, None, None
    if opened.resume_from is not None:
        start, step, optimizer, scheduler = _restore(opened.resume_from, model, cfg, iters)
    elif init_weights:
        print(f"init weights from {init_weights}: {load_init_weights(model, init_weights)}")
    print(f"PRIOR ({cfg.loss.method}): {count_parameters(model, trainable_only=True):,} trainable parameters; "
          f"{len(data.train)} studies, {iters} iterations/epoch; run {run.path}")
    train_model = wrap_ddp(model, device, find_unused_parameters=True)
    scaler, tracker = make_grad_scaler(device, cfg.runtime.amp), Tracker(run.path)
    for epoch in range(start, cfg.optim.epochs):
        stage, _ = stage_of_epoch(cfg.optim.stages, epoch)
        if epoch in stage_start_epochs(cfg.optim.stages):
            _begin_stage(model, cfg, stage, loader, device, run, epoch)
            optimizer, scheduler = _stage_optimizer(model, cfg, stage, iters)
        tic, lr = time.time(), optimizer.param_groups[0]["lr"]
        loader.dataset.set_epoch(epoch)
        seed_loader_epoch(loader, cfg.seed, epoch)
        stats = train_one_epoch(train_model, loader, optimizer, scheduler, stage, device, amp=cfg.runtime.amp,
                                scaler=scaler, grad_clip=cfg.optim.grad_clip,
                                progress=cfg.runtime.progress and info.is_main)
        step += int(stats["steps"])
        _log_epoch(tracker, stats, stage, epoch, lr, time.time() - tic)
        if info.is_main:
            save_checkpoint(run.checkpoints / "last.pt", model=model, config=to_dict(cfg), epoch=epoch + 1,
                            step=step, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            extra={"stage": stage})
    tracker.close()
    _finish(cfg, unwrap_model(model), data, run, device, evaluate)
    return run.path


def _finish(cfg: Config, model, data, run: RunDir, device: torch.device, evaluate: bool) -> None:
    if not dist_info().is_main:
        return
    if run.metrics_csv.is_file():
        with contextlib.suppress(KeyError):
            plot_curves(run.metrics_csv, ["train/loss"], run.figures / "loss_curve.png")
    if evaluate:
        summary, per_case = evaluate_pretrained(cfg, model, data, device, run.figures)
        write_eval_tables(run.eval, summary, per_case)
        print("evaluation: " + " ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float)))


def main(argv: Sequence[str] | None = None) -> Path:
    parser = train_parser("Pre-train PRIOR (global + local alignment, SPB, conditional reconstruction)")
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot / retrieval evaluation")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    return run_training(cfg, args.resume, args.init_weights, evaluate=not args.no_eval)


if __name__ == "__main__":
    main()
