"""Training entry point for FPT+, FPT and every baseline (FPT+ paper Sec. IV-A; official train.py, main.py): AdamW
(wd 0.1), per-iteration cosine LR, 20 epochs, batch 16, gradient clipping 1.0, best checkpoint by validation AUC; both
the best-validation and the final checkpoint are evaluated on the test split.

    python train.py [--config configs/default.yaml] [model.method=side_only] [--resume auto|PATH] [--init-weights PATH]
    torchrun --nproc_per_node=N train.py --config configs/messidor2.yaml --data-root /data/messidor2
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_checkpoint, load_init_weights, restore_training_state, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import to_dict
from common.rundir import RunDir, check_writable, open_run, resolve_path
from common.runtime import (
    autocast,
    cleanup_distributed,
    dist_info,
    make_grad_scaler,
    maybe_compile,
    setup_runtime,
    unwrap_model,
    wrap_ddp,
)
from common.seed import seed_loader_epoch
from common.tracking import Tracker, plot_curves
from fpt_plus.engine import evaluate, make_optimizer, make_scheduler, prepare_batch, train_one_epoch
from fpt_plus.models.factory import build_model, count_learnable, learnable_percent
from fpt_plus.models.lpm import resolve_lpm_amp
from fpt_plus.pipeline import (
    PROJECT,
    DataBundle,
    build_loaders,
    log_prediction_grid,
    prepare_data,
    side_size,
    uses_cache,
    write_evaluation,
)
from fpt_plus.settings import Config

__all__ = ["main", "run_training", "TrainState", "PROJECT_DIR"]

PROJECT_DIR = Path(__file__).resolve().parent
VAL_SCALARS = ("auc", "auc_prob", "accuracy", "f1_macro", "qwk")


@dataclass
class TrainState:
    """What the epoch loop updates and a checkpoint restores."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    best_auc: float | None = None
    step: int = 0
    step_times: list[float] = field(default_factory=list)


def measure_memory(model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, Any]:
    """Peak memory of one training step (CUDA allocator, or the CPU saved-for-backward proxy)."""
    from fpt_plus.profiling import training_step_memory

    batch = prepare_batch(next(iter(loader)), device)
    net = unwrap_model(model)
    net.train()

    def step() -> torch.Tensor:
        logits = net(**{k: batch[k] for k in net.input_keys})
        return torch.nn.functional.cross_entropy(logits.float(), batch["label"])

    return training_step_memory(net, step, device)


def make_state(cfg: Config, model: torch.nn.Module, steps_per_epoch: int, device: torch.device) -> TrainState:
    method = cfg.model.method
    optimizer = make_optimizer(model, cfg.optim.lr_for(method), cfg.optim.weight_decay, cfg.optim.betas)
    scheduler = make_scheduler(optimizer, cfg.optim.epochs, steps_per_epoch, cfg.optim.warmup_for(method))
    return TrainState(optimizer, scheduler, make_grad_scaler(device, cfg.runtime.amp))


def restore(state: TrainState, model: torch.nn.Module, resume_from: Path | None, init_weights: str | None,
            device: torch.device) -> None:
    """Full training state (model, optimiser, scheduler, scaler, RNG, epoch, step, best) or weights only."""
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        state.start_epoch, state.step, state.best_auc = restore_training_state(
            ckpt, model=model, optimizer=state.optimizer, scheduler=state.scheduler, scaler=state.scaler)
    elif init_weights is not None:
        report = load_init_weights(model, init_weights)
        print(f"initialised weights from {init_weights}: {report}")


def save(cfg: Config, run: RunDir, model: torch.nn.Module, state: TrainState, epoch: int, bundle: DataBundle,
         name: str, full: bool) -> None:
    extra = {"classes": bundle.classes, "mean": bundle.mean, "std": bundle.std}
    training = dict(optimizer=state.optimizer, scheduler=state.scheduler, scaler=state.scaler) if full else {}
    save_checkpoint(run.checkpoints / name, model=model, config=to_dict(cfg), epoch=epoch, step=state.step,
                    best_metric=state.best_auc, extra=extra, **training)


def run_epoch(cfg: Config, model: torch.nn.Module, loaders: dict[str, Any], state: TrainState, epoch: int,
              device: torch.device, num_classes: int) -> dict[str, float]:
    """One training epoch (data order a function of (seed, epoch)) and, when due, validation."""
    seed_loader_epoch(loaders["train"], cfg.seed, epoch)
    t0 = time.perf_counter()
    stats = train_one_epoch(model, loaders["train"], state.optimizer, state.scheduler, device,
                            grad_clip=cfg.optim.grad_clip, amp=cfg.runtime.amp, scaler=state.scaler,
                            progress=cfg.runtime.progress)
    state.step += stats["steps"]
    state.step_times.append((time.perf_counter() - t0) / max(stats["steps"], 1))
    scalars = {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/iterations": state.step}
    if (epoch + 1) % cfg.optim.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
        val, _ = evaluate(model, loaders["val"], device, num_classes, cfg.runtime.amp)
        scalars.update({f"val/{k}": val[k] for k in VAL_SCALARS})
    return scalars


def fit(cfg: Config, run: RunDir, model: torch.nn.Module, train_model: torch.nn.Module, loaders: dict[str, Any],
        state: TrainState, bundle: DataBundle, tracker: Tracker, device: torch.device) -> None:
    """The epoch loop: train, validate, keep best.pt (by validation AUC) and last.pt (full state)."""
    is_main = dist_info().is_main
    for epoch in range(state.start_epoch, cfg.optim.epochs):
        scalars = run_epoch(cfg, train_model, loaders, state, epoch, device, bundle.num_classes)
        improved = "val/auc" in scalars and (state.best_auc is None or scalars["val/auc"] > state.best_auc)
        if improved:
            state.best_auc = scalars["val/auc"]
        if not is_main:
            continue
        tracker.log(scalars, step=epoch + 1)
        if improved:
            save(cfg, run, model, state, epoch + 1, bundle, "best.pt", full=False)
        save(cfg, run, model, state, epoch + 1, bundle, "last.pt", full=True)
        if cfg.optim.save_every and (epoch + 1) % cfg.optim.save_every == 0:
            save(cfg, run, model, state, epoch + 1, bundle, f"epoch{epoch + 1:03d}.pt", full=False)
        print(f"[{cfg.model.method}] epoch {epoch + 1}/{cfg.optim.epochs} loss {scalars['train/loss']:.4f} "
              f"val auc {scalars.get('val/auc', float('nan')):.4f} lr {scalars['train/lr']:.2e} "
              f"{state.step_times[-1]:.3f}s/step", flush=True)


def evaluate_checkpoints(cfg: Config, run: RunDir, model: torch.nn.Module, loaders: dict[str, Any], bundle: DataBundle,
                     tracker: Tracker, device: torch.device) -> dict[str, dict[str, Any]]:
    """Test metrics of the final weights and of best.pt; tables, figures and the prediction grid (rank 0)."""
    results: dict[str, dict[str, Any]] = {}
    records = loaders["test"].dataset.records
    for tag in ("final", "best"):
        if tag == "best" and (run.checkpoints / "best.pt").is_file():
            unwrap_model(model).load_state_dict(load_checkpoint(run.checkpoints / "best.pt", device)["model"])
        results[tag], (idx, labels, logits) = evaluate(model, loaders["test"], device, bundle.num_classes,
                                                       cfg.runtime.amp, cfg.runtime.progress)
        if dist_info().is_main:
            write_evaluation(run.eval, run.figures, tag, "test", results[tag], idx, labels, logits, records,
                             bundle.classes)
    if dist_info().is_main:
        log_prediction_grid(tracker, records, idx, labels, logits, bundle.num_classes, max(side_size(cfg), 64),
                            cfg.optim.epochs, run.figures / "test_inputs_by_prediction.png")
        if run.metrics_csv.is_file():
            plot_curves(run.metrics_csv, ["train/loss", "val/auc"], run.figures / "training_curves.png")
    return results


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> dict[str, Any]:
    """Train ``model.method``; returns the run folder, test metrics of the best/final checkpoints, learnable
    parameters, memory and step time."""
    device = setup_runtime(cfg.runtime, cfg.seed)
    autocast(device, cfg.runtime.amp)  # fp16 without CUDA is refused here, not at the first step
    cfg.model.lpm.amp = resolve_lpm_amp(cfg.model.lpm.amp, device)  # auto -> what this device runs fast
    check_writable(cfg.runs_root)  # before any data work
    bundle = prepare_data(cfg)  # every image checked before the run folder exists
    opened = open_run(PROJECT, cfg, resume=resume, device=device)
    model = build_model(cfg.model, bundle.num_classes, preloaded=uses_cache(cfg),
                        lpm_amp=cfg.model.lpm.amp).to(device)
    loaders = build_loaders(cfg, bundle, model, device)
    memory = measure_memory(model, loaders["train"], device) if dist_info().is_main else {}
    state = make_state(cfg, model, len(loaders["train"]), device)
    restore(state, model, opened.resume_from, init_weights, device)  # last: the RNG state is the checkpoint's
    train_model = maybe_compile(wrap_ddp(model, device), cfg.runtime.compile)
    with Tracker(opened.run.path) as tracker:
        fit(cfg, opened.run, model, train_model, loaders, state, bundle, tracker, device)
        results = evaluate_checkpoints(cfg, opened.run, model, loaders, bundle, tracker, device)
    cleanup_distributed()
    learnable = count_learnable(model)
    return {
        "method": cfg.model.method, "run_dir": opened.run.path, "test_best": results["best"],
        "test_final": results["final"], "val_best_auc": state.best_auc, "learnable": learnable,
        "learnable_percent": learnable_percent(cfg.model.method, learnable, cfg.model.lpm),
        "peak_mib": memory.get("peak_mib", float("nan")), "memory_method": memory.get("method", ""),
        "step_time_s": sum(state.step_times) / len(state.step_times) if state.step_times else float("nan"),
        "uses_cache": uses_cache(cfg), "classes": bundle.classes, "epochs": cfg.optim.epochs,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = train_parser("Train FPT+ / FPT or a baseline (model.method=...).")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    if dist_info().is_main:
        print(f"method {cfg.model.method}: dataset {cfg.data.name} at {resolve_path(cfg.data.root)}")
    result = run_training(cfg, resume=args.resume, init_weights=args.init_weights)
    if dist_info().is_main:
        best = result["test_best"]
        print(f"test (best val checkpoint): auc {best['auc']:.4f} acc {best['accuracy']:.4f} "
              f"qwk {best['qwk']:.4f}; learnable {result['learnable']:,} ({result['learnable_percent']:.2f} %); "
              f"run {result['run_dir']}")
    return result


if __name__ == "__main__":
    main()
