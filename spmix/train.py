"""Train SPMix or one of its baselines on ISIC 2018 Task 3 (or the synthetic stand-in) — paper Sec. II/III.

    python train.py [--config configs/default.yaml] [method=cmo seed=1 ...] [--resume auto|PATH] [--init-weights PATH]
    python train.py --config configs/isic2018.yaml --data-root /data/isic2018          # real data, paper recipe
    torchrun --nproc_per_node=4 train.py --config configs/isic2018.yaml --data-root /data/isic2018   # DDP

Writes ``runs/spmix/<experiment>/<timestamp>/`` (config.yaml with ``saliency.resolved``, env.json, metrics.csv,
tb/ with image grids, checkpoints/{last,best}.pt, eval/summary.csv + per_case.csv of the test subset, figures/).
Every input is checked before the run folder is created: config values, a writable ``runs_root``, the data root,
every image the split lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import save_checkpoint
from spmix.engine import STEPS, StepContext, TrainStep, evaluate, start_epoch, train_one_epoch
from spmix.losses import ClassificationLoss, LabelQueue, PaCoLoss
from spmix.model import SPMixNet, build_model
from spmix.pipeline import Loaders, Prepared, eval_loader, make_loaders, prepare_data, seed_epoch, subset
from spmix.settings import CLASSES, METHODS, Config

PROJECT_DIR = Path(__file__).resolve().parent


@dataclass
class Training:
    """The objects one training run updates."""

    model: SPMixNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    step_module: torch.nn.Module
    ctx: StepContext
    queue: LabelQueue | None
    steps_per_epoch: int


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier per iteration: linear warm-up then cosine to 0 (released script ``adjust_learning_rate``,
    applied per iteration instead of per epoch)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def fed_label_counts(cfg: Config, counts: np.ndarray) -> np.ndarray:
    """Class counts of the labels the loss actually receives, for the losses that use a class prior (PaCo,
    balanced softmax, re-weighting). Under the class-balanced sampler (re-sampling, or SPMix with
    ``dominant: balanced``, where the label is the class-balanced image's) every class is fed equally often, so
    the prior is uniform; adding the instance log-prior there would correct the imbalance a second time. The
    released code feeds the instance-sampled labels (its dominant image), so its training-count prior
    (GPaCo ``cal_weight_for_classes``) matches what it feeds."""
    sampler, mixing, _ = METHODS[cfg.method]
    balanced = sampler == "class_balanced" or (mixing == "spmix" and cfg.spmix.dominant == "balanced")
    counts = np.asarray(counts, dtype=np.float64)
    return np.full_like(counts, counts.sum() / counts.size) if balanced else counts


def build_training(cfg: Config, loaders: Loaders, device: torch.device, init_weights: str | None) -> Training:
    """Model, AdamW, warm-up + cosine schedule, loss (CE family or PaCo with its queue) and the DDP step module."""
    from common.checkpoint import load_init_weights
    from common.runtime import make_grad_scaler, maybe_compile, wrap_ddp
    from spmix.data import class_counts

    counts = fed_label_counts(cfg, class_counts(loaders.primary.dataset.labels))
    two_views = cfg.loss_name == "paco"
    model = build_model(cfg.model, len(CLASSES), cfg.data.img_size).to(device)
    if init_weights:
        load_init_weights(model, init_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    spe = len(loaders.primary)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        cfg.optim.epochs * spe, int(round(cfg.optim.warmup_epochs * spe))))
    criterion = ClassificationLoss(cfg.loss_name if not two_views else "ce", counts, cfg.loss.cb_beta).to(device)
    paco, queue = None, None
    if two_views:
        p = cfg.loss.paco
        queue = LabelQueue(p.queue, cfg.model.proj_dim).to(device)
        paco = (PaCoLoss(counts, p.alpha, p.beta, p.gamma, p.temperature).to(device), queue)
    ctx = StepContext(num_classes=len(CLASSES), epoch=0, epochs=cfg.optim.epochs, rng=None,
                      generator=torch.Generator(), cfg=cfg, two_views=two_views)
    step = TrainStep(model, STEPS[METHODS[cfg.method][1]], criterion, ctx, paco)
    # without PaCo the projector/predictor heads get no gradient, which DDP must be told about
    step = maybe_compile(wrap_ddp(step, device, find_unused_parameters=not two_views), cfg.runtime.compile)
    return Training(model, optimizer, scheduler, make_grad_scaler(device, cfg.runtime.amp), step, ctx, queue, spe)


def selection_key(val: dict[str, float], metric: str, epoch: int) -> tuple[float, float, float, int]:
    """Order of validation results for ``best.pt``: the selection metric, ties broken by the validation macro
    AUC, then by the lower validation loss, then by the later epoch (1-based ``epoch``). A constant prediction
    scores exactly 1/C balanced accuracy every epoch, so without tie-breaks its first epoch would be kept."""
    auc = val["auc"] if math.isfinite(val["auc"]) else -math.inf
    return float(val[metric]), float(auc), -float(val["loss"]), int(epoch)


def is_better(key: Sequence[float], best_key: Sequence[float] | None) -> bool:
    """Lexicographic comparison of two :func:`selection_key` results (``None``: nothing kept yet)."""
    return best_key is None or tuple(key) > tuple(best_key)


def restore(training: Training, checkpoint: Path | None, device: torch.device) -> tuple[int, list | None]:
    """Full state of a resumed run (model, optimiser, schedule, scaler, RNG, PaCo queue) -> (epoch, best key)."""
    from common.checkpoint import load_checkpoint, restore_training_state

    if checkpoint is None:
        return 0, None
    ckpt = load_checkpoint(checkpoint, map_location=device)
    epoch, _, _ = restore_training_state(ckpt, model=training.model, optimizer=training.optimizer,
                                         scheduler=training.scheduler, scaler=training.scaler)
    if training.queue is not None and "queue" in ckpt.get("extra", {}):
        training.queue.load_state_dict(ckpt["extra"]["queue"])
    return epoch, ckpt.get("extra", {}).get("best_key")


def save_epoch(training: Training, cfg: Config, run, epoch: int, best_key: list, improved: bool) -> None:
    """``last.pt`` every epoch and ``best.pt`` when :func:`is_better` (rank 0 only)."""
    from common.config import to_dict

    extra = {"best_key": list(best_key)}
    if training.queue is not None:
        extra["queue"] = training.queue.state_dict()
    kw = dict(model=training.model, config=to_dict(cfg), epoch=epoch + 1, step=(epoch + 1) * training.steps_per_epoch,
              best_metric=best_key[0], optimizer=training.optimizer, scheduler=training.scheduler,
              scaler=training.scaler, extra=extra)
    if improved:
        save_checkpoint(run.checkpoints / "best.pt", **kw)
    save_checkpoint(run.checkpoints / "last.pt", **kw)


def run_epochs(training: Training, cfg: Config, loaders: Loaders, run, device, first: int, best_key: list | None,
               tracker) -> list | None:
    """The epoch loop: seeded data order, one training pass, validation, metrics row, checkpoints."""
    from tqdm import tqdm

    from common.runtime import dist_info
    from spmix.reports import training_grid

    info = dist_info()
    for epoch in tqdm(range(first, cfg.optim.epochs), desc="epochs", disable=not (cfg.runtime.progress and
                                                                                   info.is_main), leave=False):
        seed_epoch(loaders, cfg.seed, epoch)
        start_epoch(training.ctx, epoch, cfg.seed, info.rank)
        batch: dict = {}
        stats = train_one_epoch(training.step_module, loaders.primary, loaders.balanced, training.optimizer,
                                training.scheduler, device, training.scaler, cfg.runtime.amp, cfg.optim.grad_clip,
                                progress=cfg.runtime.progress and info.is_main, first_batch=batch)
        val = evaluate(training.model, loaders.val, device, cfg.groups, cfg.runtime.amp).metrics  # all ranks
        key = selection_key(val, cfg.optim.select_metric, epoch + 1)
        improved = is_better(key, best_key)
        best_key = list(key) if improved else best_key
        if not info.is_main:
            continue
        tracker.log({"epoch": epoch + 1, "iteration": (epoch + 1) * training.steps_per_epoch, **stats,
                     **{f"val_{k}": v for k, v in val.items()}}, step=epoch + 1)
        tracker.log_image("train/batch", training_grid(batch, cfg), epoch + 1)
        print(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {stats['train_loss']:.4f} val "
              f"{cfg.optim.select_metric} {key[0]:.4f} auc {val['auc']:.3f} tail {val['tail_recall']:.3f}"
              f"{' (best)' if improved else ''}", flush=True)
        save_epoch(training, cfg, run, epoch, best_key, improved)
    return best_key


def evaluate_test(training: Training, cfg: Config, prep: Prepared, run, device, tracker) -> dict[str, dict]:
    """The test subset with the final weights (``eval/final_summary.csv``) and with ``best.pt``
    (``eval/summary.csv``, confusion matrix, ROC, a TensorBoard grid), and ``best.pt`` on its training images
    (``eval/train_summary.csv``: test recall far below training recall = over-fitting).
    -> {"best": metrics (+ ``train_*``), "final": metrics}."""
    from common.checkpoint import load_checkpoint
    from spmix.reports import log_predictions, write_evaluation

    frame = subset(prep.frame, "test")
    loader = eval_loader(cfg, frame)
    final = evaluate(training.model, loader, device, cfg.groups, cfg.runtime.amp, progress=cfg.runtime.progress)
    write_evaluation(final, frame, "test", run.eval, prefix="final_", extra={"checkpoint": "final",
                                                                           "epoch": cfg.optim.epochs})
    best_path = run.checkpoints / "best.pt"
    ckpt = load_checkpoint(best_path, map_location=device)
    training.model.load_state_dict(ckpt["model"])
    result = evaluate(training.model, loader, device, cfg.groups, cfg.runtime.amp, progress=cfg.runtime.progress)
    write_evaluation(result, frame, "test", run.eval, run.figures, extra={"checkpoint": "best",
                                                                          "epoch": int(ckpt["epoch"])})
    log_predictions(tracker, result, frame, cfg, cfg.optim.epochs)
    train_frame = subset(prep.frame, "train")  # how well best.pt fits its own training images (over-fitting)
    fit = evaluate(training.model, eval_loader(cfg, train_frame), device, cfg.groups, cfg.runtime.amp)
    write_evaluation(fit, train_frame, "train", run.eval, prefix="train_", extra={"checkpoint": "best",
                                                                                 "epoch": int(ckpt["epoch"])})
    fit_metrics = {f"train_{k}": fit.metrics[k] for k in ("balanced_accuracy", "tail_recall", "head_recall")}
    return {"best": {**result.metrics, **fit_metrics, "epoch": float(ckpt["epoch"])},
            "final": {**final.metrics, "epoch": float(cfg.optim.epochs)}}


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> dict:
    """Checks, data, model, the epoch loop and the test evaluation, in that order."""
    from common.rundir import check_writable, open_run
    from common.runtime import cleanup_distributed, dist_info, main_process_first, setup_runtime
    from common.tracking import Tracker

    check_writable(cfg.runs_root)  # a read-only runs folder fails before any data work
    device = setup_runtime(cfg.runtime, cfg.seed)
    info = dist_info()
    with main_process_first():  # rank 0 writes the synthetic set, split file and saliency maps
        prep = prepare_data(cfg)
    loaders = make_loaders(cfg, prep, two_views=cfg.loss_name == "paco")
    training = build_training(cfg, loaders, device, init_weights)
    opened = open_run("spmix", cfg, resume=resume, device=device)
    first, best_key = restore(training, opened.resume_from, device)
    tracker = Tracker(opened.run.path) if info.is_main else None
    best_key = run_epochs(training, cfg, loaders, opened.run, device, first, best_key, tracker)
    cleanup_distributed()  # the test evaluation below runs on rank 0 alone
    test = {"best": None, "final": None}
    if info.is_main:
        test = evaluate_test(training, cfg, prep, opened.run, device, tracker)
        tracker.close()
    return {"run_dir": opened.run.path, "test": test["best"], "test_final": test["final"],
            "best_val": best_key[0] if best_key else None, "saliency": cfg.saliency.resolved}


def main(argv: Sequence[str] | None = None) -> dict:
    from common.cli import parse_train, train_parser
    from common.datasets import DatasetFolderError, DataVerificationError
    from common.rundir import RunFolderError

    parser = train_parser("Train SPMix / baselines on ISIC 2018 Task 3")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    try:
        return run_training(cfg, args.resume, args.init_weights)
    except (DatasetFolderError, DataVerificationError, RunFolderError) as exc:
        parser.exit(1, f"train.py: error: {exc}\n")


if __name__ == "__main__":
    main()
