"""Training entry point for FPT+, FPT and every baseline (FPT+ paper Sec. IV-A; spec 2): AdamW (wd 0.1),
per-iteration cosine LR, 20 epochs, batch 16, gradient clipping 1.0, best checkpoint by validation AUC; both the
best-validation and the final checkpoint are evaluated on the test split.

    python train.py --config configs/default.yaml [method=side_only] [--resume auto|PATH] [--init-weights PATH]
    torchrun --nproc_per_node=N train.py --config configs/messidor2.yaml data.root=/data/messidor2
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from common.runtime import (
    cleanup_distributed,
    dist_info,
    init_distributed,
    make_grad_scaler,
    maybe_compile,
    pick_device,
    unwrap_model,
    wrap_ddp,
)
from common.seed import seed_everything
from common.tracking import Tracker, plot_curves
from fpt_plus.engine import compute_metrics, make_optimizer, make_scheduler, predict, prepare_batch, train_one_epoch
from fpt_plus.experiment import (
    DataBundle,
    build_dataset,
    lpm_threads,
    make_loader,
    model_inputs,
    prepare_data,
    uses_cache,
)
from fpt_plus.models.factory import build_model, count_learnable, learnable_percent
from fpt_plus.settings import ExperimentConfig

__all__ = ["main", "run_training", "build_loaders", "PROJECT_DIR"]

PROJECT_DIR = Path(__file__).resolve().parent


@torch.no_grad()
def _cached_features(model: torch.nn.Module, cfg: ExperimentConfig, bundle: DataBundle, split: str,
                     device: torch.device) -> torch.Tensor:
    """Linear probing: CLS features ``(N, D)`` of one split from the frozen LPM (no augmentation), computed once."""
    dataset = build_dataset(cfg, bundle, split, ("lpm",), train=False)
    loader = make_loader(dataset, cfg.data.preload_batch_size, train=False, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, split_across_ranks=False)  # every rank needs all features
    model.eval()
    with lpm_threads(cfg):
        feats = [model.encode(batch["lpm"].to(device)).float().cpu() for batch in loader]
    return torch.cat(feats)


def build_loaders(cfg: ExperimentConfig, bundle: DataBundle, model: torch.nn.Module, device: torch.device
                  ) -> dict[str, Any]:
    """Train/val/test loaders with the inputs the model consumes; builds the preload cache when it is missing."""
    inputs = model_inputs(cfg, model)
    cache = None
    features: dict[str, torch.Tensor | None] = {s: None for s in ("train", "val", "test")}
    if "keys" in inputs:
        from fpt_plus.preload import run_preload

        cache = run_preload(cfg, bundle, device=device)
        cache.check_meta()
    if "features" in inputs:
        features = {s: _cached_features(unwrap_model(model), cfg, bundle, s, device) for s in features}
    loaders = {}
    for split in ("train", "val", "test"):
        train = split == "train"
        ds = build_dataset(cfg, bundle, split, inputs, train=train, cache=cache, features=features[split])
        bs = cfg.train.batch_size if train else cfg.train.eval_batch_size
        loaders[split] = make_loader(ds, bs, train=train, seed=cfg.seed, num_workers=cfg.data.num_workers)
    return loaders


def _measure_memory(model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
    from fpt_plus.profiling import training_step_memory

    batch = prepare_batch(next(iter(loader)), device)
    net = unwrap_model(model)
    net.train()

    def step() -> torch.Tensor:
        logits = net(**{k: batch[k] for k in net.input_keys})
        return torch.nn.functional.cross_entropy(logits.float(), batch["label"])

    return training_step_memory(net, step, device)


def _evaluate(model: torch.nn.Module, loader: Any, device: torch.device, cfg: ExperimentConfig, num_classes: int
              ) -> tuple[dict[str, Any], Any]:
    idx, labels, logits = predict(model, loader, device, cfg.runtime.amp)
    return compute_metrics(labels, logits, num_classes), (idx, labels, logits)


def run_training(cfg: ExperimentConfig, resume: str | None = None, init_weights: str | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Train ``cfg.method``; returns the run folder, test metrics of the best/final checkpoints, learnable
    parameters, memory and step time."""
    info = init_distributed()
    seed_everything(cfg.seed, info.rank, cfg.runtime.deterministic)
    if cfg.runtime.num_threads > 0:
        torch.set_num_threads(cfg.runtime.num_threads)
    device = pick_device(cfg.runtime.device, info.local_rank)
    bundle = prepare_data(cfg)
    num_classes = bundle.num_classes
    model = build_model(cfg, num_classes, preloaded=uses_cache(cfg)).to(device)
    learnable = count_learnable(model)
    loaders = build_loaders(cfg, bundle, model, device)

    experiment_root = resolve_path(cfg.runs.root) / "fpt_plus" / cfg.runs.experiment
    resume_path = find_resume_checkpoint(resume, experiment_root)
    run = create_run_dir("fpt_plus", cfg.runs.experiment, cfg, root=cfg.runs.root, device=device,
                         existing=resume_path.parent.parent if resume_path else None)
    memory = _measure_memory(model, loaders["train"], device) if info.is_main else {}

    optimizer = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay, cfg.train.betas)
    scheduler = make_scheduler(optimizer, cfg.train.epochs, len(loaders["train"]), cfg.train.warmup_epochs)
    scaler = make_grad_scaler(device, cfg.runtime.amp)
    start_epoch, best_auc = 0, None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, map_location=device)
        start_epoch, _, best_auc = restore_training_state(ckpt, model=model, optimizer=optimizer,
                                                          scheduler=scheduler, scaler=scaler)
        print(f"resumed from {resume_path} at epoch {start_epoch}")
    elif init_weights is not None:
        report = load_init_weights(model, init_weights)
        print(f"initialised weights from {init_weights}: {report}")
    train_model = maybe_compile(wrap_ddp(model, device) if info.distributed else model, cfg.runtime.compile)

    tracker = Tracker(run.path)
    config_dict = to_dict(cfg)
    extra = {"classes": bundle.classes, "mean": bundle.mean, "std": bundle.std}
    step_times: list[float] = []
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler = getattr(loaders["train"], "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        stats = train_one_epoch(train_model, loaders["train"], optimizer, scheduler, device,
                                grad_clip=cfg.train.grad_clip, amp=cfg.runtime.amp, scaler=scaler,
                                progress=progress)
        step_times.append((time.perf_counter() - t0) / max(stats["steps"], 1))
        scalars = {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/step_time_s": step_times[-1]}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            val, _ = _evaluate(train_model, loaders["val"], device, cfg, num_classes)
            scalars.update({f"val/{k}": val[k] for k in ("auc", "auc_prob", "accuracy", "f1_macro", "kappa")})
            if info.is_main and (best_auc is None or val["auc"] > best_auc):
                best_auc = val["auc"]
                save_checkpoint(run.checkpoints / "best.pt", model=model, config=config_dict, epoch=epoch + 1,
                                step=(epoch + 1) * stats["steps"], best_metric=best_auc, extra=extra)
        if info.is_main:
            tracker.log(scalars, step=epoch + 1)
            save_checkpoint(run.checkpoints / "last.pt", model=model, config=config_dict, epoch=epoch + 1,
                            step=(epoch + 1) * stats["steps"], best_metric=best_auc, optimizer=optimizer,
                            scheduler=scheduler, scaler=scaler, extra=extra)
            if cfg.train.save_every and (epoch + 1) % cfg.train.save_every == 0:
                save_checkpoint(run.checkpoints / f"epoch{epoch + 1:03d}.pt", model=model, config=config_dict,
                                epoch=epoch + 1, step=(epoch + 1) * stats["steps"], best_metric=best_auc,
                                extra=extra)
            print(f"[{cfg.method}] epoch {epoch + 1}/{cfg.train.epochs} loss {stats['loss']:.4f} "
                  f"val auc {scalars.get('val/auc', float('nan')):.4f} lr {stats['lr']:.2e} "
                  f"{step_times[-1]:.3f}s/step", flush=True)
    tracker.close()

    from fpt_plus.eval import write_evaluation

    results: dict[str, Any] = {}
    for tag in ("final", "best"):
        if tag == "best":
            best_path = run.checkpoints / "best.pt"
            if best_path.is_file():
                unwrap_model(model).load_state_dict(load_checkpoint(best_path, map_location=device)["model"])
        metrics, (idx, labels, logits) = _evaluate(model, loaders["test"], device, cfg, num_classes)
        results[tag] = metrics
        if info.is_main:
            write_evaluation(run, tag, metrics, idx, labels, logits, loaders["test"].dataset.records, bundle.classes)
    if info.is_main and run.metrics_csv.is_file():
        plot_curves(run.metrics_csv, ["train/loss", "val/auc"], run.figures / "training_curves.png", x="step")
    cleanup_distributed()
    return {
        "method": cfg.method, "run_dir": run.path, "test_best": results["best"], "test_final": results["final"],
        "val_best_auc": best_auc, "learnable": learnable,
        "learnable_percent": learnable_percent(cfg.method, learnable, cfg.model.lpm),
        "peak_mib": memory.get("peak_mib", float("nan")), "memory_method": memory.get("method", ""),
        "step_time_s": float(sum(step_times) / len(step_times)) if step_times else float("nan"),
        "uses_cache": uses_cache(cfg), "classes": bundle.classes,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_arg_parser("Train FPT+ / FPT or a baseline (method=...).")
    cfg, args = parse_cli(ExperimentConfig, argv, parser, search_dirs=[PROJECT_DIR])
    if dist_info().is_main:
        print(f"method {cfg.method}: dataset {cfg.dataset} at {resolve_path(cfg.data.root)}")
    result = run_training(cfg, resume=args.resume, init_weights=args.init_weights, progress=False)
    if dist_info().is_main:
        best = result["test_best"]
        print(f"test (best val checkpoint): auc {best['auc']:.4f} acc {best['accuracy']:.4f} "
              f"kappa {best['kappa']:.4f}; learnable {result['learnable']:,} ({result['learnable_percent']:.2f} %); "
              f"run {result['run_dir']}")
    return result


if __name__ == "__main__":
    main()

