"""Train SPMix or one of its baselines on ISIC 2018 Task 3 (or the synthetic stand-in) — paper Sec. II/III.

    python train.py --config configs/default.yaml [method=cmo seed=1 ...] [--resume auto|PATH] [--init-weights PATH]
    torchrun --nproc_per_node=4 train.py --config configs/isic2018.yaml data.root=/data/isic2018   # DDP, batch per GPU

Writes ``runs/spmix/<experiment>/<timestamp>/`` (config.yaml with ``saliency.resolved``, env.json, metrics.csv,
tb/, checkpoints/{last,best}.pt, eval/summary.csv + per_case.csv on the test subset, figures/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from spmix.data import (
    CLASSES,
    ISICDataset,
    class_counts,
    eval_transform,
    load_split,
    make_train_sampler,
    train_transforms,
)
from spmix.engine import NEEDS_BALANCED, STEPS, StepContext, cycle, train_one_epoch
from spmix.experiment import METHODS, Config, validate
from spmix.losses import ClassificationLoss, LabelQueue, PaCoLoss
from spmix.model import SPMixNet

PROJECT_DIR = Path(__file__).resolve().parent
SALIENCY_METHODS = ("spmix", "saliencymix")


@dataclass
class Prepared:
    """Data prepared for a run."""

    frame: object                 # pandas DataFrame of the split
    data_root: Path
    saliency_root: Path | None


def method_loss(cfg: Config) -> str:
    return METHODS[cfg.method][2] or cfg.loss.name


def prepare_data(cfg: Config) -> Prepared:
    """Generate synthetic data if configured, load/write the split, precompute saliency if the method needs it.
    Sets ``cfg.saliency.resolved`` to the detector that ran (or that produced the stored maps)."""
    from common.rundir import resolve_path
    from spmix.saliency_maps import precompute_tree, read_saliency_record, resolve_method

    root = resolve_path(cfg.data.root)
    if cfg.data.synthetic:
        from spmix.synth import ensure_synthetic

        ensure_synthetic(root, train=cfg.data.synth_train, val_per_class=cfg.data.synth_val_per_class,
                         test_per_class=cfg.data.synth_test_per_class)
    elif not root.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist; point it at the unzipped ISIC 2018 Task 3 folders "
                                f"or set data.synthetic=true")
    frame = load_split(root, cfg.data.split, cfg.seed if cfg.data.split != "official" else 0,
                       cfg.data.holdout_per_class)
    if cfg.method not in SALIENCY_METHODS:
        cfg.saliency.resolved = "unused"
        return Prepared(frame, root, None)
    resolved = resolve_method(cfg.saliency.method)
    sal_root = resolve_path(cfg.saliency.root) if cfg.saliency.root else root / "saliency"
    record = read_saliency_record(sal_root)
    if record is not None and record.get("method") != resolved:
        raise RuntimeError(f"saliency maps in {sal_root} were computed with {record.get('method')}, but "
                           f"saliency.method={cfg.saliency.method} resolves to {resolved}. Delete that folder, point "
                           f"saliency.root elsewhere, or set saliency.method={record.get('method')}")
    if cfg.saliency.precompute:
        precompute_tree(root, sal_root, resolved)  # maps of every image under root (skips existing ones)
    cfg.saliency.resolved = resolved
    return Prepared(frame, root, sal_root)


def make_loaders(cfg: Config, prep: Prepared, two_views: bool) -> tuple[DataLoader, DataLoader | None, DataLoader]:
    """(primary training loader, class-balanced loader or None, validation loader); under torchrun every loader
    reads this rank's share."""
    from common.runtime import make_sampler
    from common.seed import loader_seed_kwargs, reseed_transforms

    frame = prep.frame
    train = frame[frame["subset"] == "train"].reset_index(drop=True)
    val = frame[frame["subset"] == "val"].reset_index(drop=True)
    q, k = train_transforms(cfg.data.img_size, cfg.augment)
    ds = ISICDataset(train, [q, k] if two_views else [q], prep.data_root, prep.saliency_root, cfg.data.cache)
    reseed_transforms(ds, cfg.seed)  # albumentations keeps its own RNG; workers reseed via loader_seed_kwargs
    sampler_kind, mixing, _ = METHODS[cfg.method]
    kw = dict(batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, drop_last=True)
    sampler = make_train_sampler(ds.labels, sampler_kind, cfg.seed)
    primary = DataLoader(ds, sampler=sampler, shuffle=sampler is None, **kw, **loader_seed_kwargs(cfg.seed))
    balanced = None
    if mixing in NEEDS_BALANCED:
        balanced = DataLoader(ds, sampler=make_train_sampler(ds.labels, "class_balanced", cfg.seed + 17), **kw,
                              **loader_seed_kwargs(cfg.seed + 17))
    val_ds = ISICDataset(val, [eval_transform(cfg.data.img_size, cfg.augment)], cache=cfg.data.cache)
    val_loader = DataLoader(val_ds, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.num_workers,
                            sampler=make_sampler(val_ds, shuffle=False))  # each rank its share under torchrun
    return primary, balanced, val_loader


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier per iteration: linear warm-up then cosine to 0 (spec §2, per-iteration form)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def main(argv: Sequence[str] | None = None) -> dict:
    from common.checkpoint import (
        find_resume_checkpoint,
        load_checkpoint,
        load_init_weights,
        restore_training_state,
        save_checkpoint,
    )
    from common.config import ConfigError, build_arg_parser, parse_cli, to_dict
    from common.rundir import create_run_dir, resolve_path
    from common.runtime import (
        cleanup_distributed,
        init_distributed,
        main_process_first,
        make_grad_scaler,
        maybe_compile,
        pick_device,
        wrap_ddp,
    )
    from common.seed import seed_everything
    from common.tracking import Tracker
    from spmix.engine import TrainStep, group_metrics, predict
    from spmix.eval import evaluate_subset

    parser = build_arg_parser("Train SPMix / baselines on ISIC 2018 Task 3")
    cfg, args = parse_cli(Config, argv, parser, search_dirs=[PROJECT_DIR])
    try:
        validate(cfg)
    except ConfigError as exc:
        parser.error(str(exc))
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    info = init_distributed()  # torchrun: one process per GPU, data.batch_size per process
    seed_everything(cfg.seed, info.rank, deterministic=cfg.runtime.deterministic)
    device = pick_device(cfg.runtime.device, info.local_rank)
    with main_process_first():  # rank 0 writes the synthetic set, split file and saliency maps
        prep = prepare_data(cfg)
    loss_name = method_loss(cfg)
    two_views = loss_name == "paco"
    primary, balanced, val_loader = make_loaders(cfg, prep, two_views)
    counts = class_counts(primary.dataset.labels)

    model = SPMixNet(cfg.model, len(CLASSES), cfg.data.img_size).to(device)
    if args.init_weights:
        load_init_weights(model, args.init_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = len(primary)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        cfg.optim.epochs * steps_per_epoch, int(round(cfg.optim.warmup_epochs * steps_per_epoch))))
    scaler = make_grad_scaler(device, cfg.runtime.amp)
    criterion = ClassificationLoss(loss_name if loss_name != "paco" else "ce", counts, cfg.loss.cb_beta).to(device)
    paco = None
    if two_views:
        p = cfg.loss.paco
        paco = (PaCoLoss(counts, p.alpha, p.beta, p.gamma, p.temperature).to(device),
                LabelQueue(p.queue, cfg.model.proj_dim).to(device))

    experiment_dir = resolve_path(cfg.runs_root) / "spmix" / cfg.experiment
    resume = find_resume_checkpoint(args.resume, experiment_dir)
    start_epoch, best = 0, None
    run = create_run_dir("spmix", cfg.experiment, to_dict(cfg), root=cfg.runs_root, device=device,
                         existing=resume.parent.parent if resume else None)
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        start_epoch, _, best = restore_training_state(ckpt, model=model, optimizer=optimizer, scheduler=scheduler,
                                                      scaler=scaler)
        if paco is not None and "queue" in ckpt.get("extra", {}):
            paco[1].load_state_dict(ckpt["extra"]["queue"])
        if info.is_main:
            print(f"resumed from {resume} at epoch {start_epoch}")

    ctx = StepContext(num_classes=len(CLASSES), epoch=start_epoch, epochs=cfg.optim.epochs,
                      rng=np.random.default_rng(cfg.seed + 1000 * start_epoch + 1_000_003 * info.rank),
                      generator=torch.Generator().manual_seed(cfg.seed + start_epoch + 1_000_003 * info.rank),
                      cfg=cfg, two_views=two_views)
    step_module = TrainStep(model, STEPS[METHODS[cfg.method][1]], criterion, ctx, paco)
    # without PaCo the projector/predictor heads get no gradient, which DDP must be told about
    step_module = maybe_compile(wrap_ddp(step_module, device, find_unused_parameters=not two_views),
                                cfg.runtime.compile)
    balanced_iter = cycle(balanced) if balanced is not None else None
    groups = {"head": cfg.eval.head, "medium": cfg.eval.medium, "tail": cfg.eval.tail}
    tracker = Tracker(run.path) if info.is_main else None
    cfg_dict = to_dict(cfg)
    for epoch in range(start_epoch, cfg.optim.epochs):
        ctx.epoch = epoch
        for loader in (primary, balanced):
            if loader is not None and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
        stats = train_one_epoch(step_module, primary, balanced_iter, optimizer, scheduler, device, scaler,
                                cfg.runtime.amp, cfg.optim.grad_clip)
        logits, labels, _ = predict(model, val_loader, device, cfg.runtime.amp)  # gathered: same on every rank
        val = group_metrics(labels, logits, groups)
        score = val[cfg.eval.select_metric]
        improved = best is None or score > best
        best = score if improved else best
        if not info.is_main:
            continue
        row = {"epoch": epoch + 1, **stats, **{f"val_{k}": v for k, v in val.items()}}
        tracker.log(row, step=epoch + 1)
        print(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {stats['train_loss']:.4f} val "
              f"{cfg.eval.select_metric} {score:.4f} tail {val['tail_recall']:.3f}", flush=True)
        extra = {"queue": paco[1].state_dict()} if paco is not None else {}
        kw = dict(model=model, config=cfg_dict, epoch=epoch + 1, step=(epoch + 1) * steps_per_epoch, best_metric=best,
                  optimizer=optimizer, scheduler=scheduler, scaler=scaler, extra=extra)
        if improved:
            save_checkpoint(run.checkpoints / "best.pt", **kw)
        if cfg.save_every_epoch or epoch + 1 == cfg.optim.epochs:
            save_checkpoint(run.checkpoints / "last.pt", **kw)
    cleanup_distributed()  # the test evaluation below runs on rank 0 alone
    if not info.is_main:
        return {"run_dir": run.path, "test": None, "best_val": best, "saliency": cfg.saliency.resolved}
    tracker.close()
    best_path = run.checkpoints / "best.pt"
    if best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path, map_location=device)["model"])
    test = evaluate_subset(model, cfg, prep.frame, "test", device, run.eval, run.figures)
    return {"run_dir": run.path, "test": test, "best_val": best, "saliency": cfg.saliency.resolved}

if __name__ == "__main__":
    main()
