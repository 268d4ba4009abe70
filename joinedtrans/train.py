"""Train JOINEDTrans end to end: coarse multi-task network -> ROI hand-off -> fine disc/cup U-Net -> fovea U-Net,
then score the ``eval.split`` (JOINED ``Coarse/train_smp_y.py``, ``Coarse/evaluate_seg_smp_MSE.py``,
``Fine/faz_segmentation.py``; the encoder pre-training is ``pretrain.py``, passed in as ``coarse.encoder_init``).

    python train.py [--config configs/default.yaml] [--data-root DIR] [--resume auto|PATH] [--init-weights PATH]
                    [key=value ...]

One run folder holds every stage: ``checkpoints/{coarse,fine,fovea}.pt`` (finished stages), ``last.pt`` (the
running stage, for ``--resume``), ``best.pt`` (the whole pipeline + the input statistics, for ``eval.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import load_checkpoint, save_checkpoint
from common.cli import parse_train, train_parser
from common.config import to_dict
from common.rundir import RunDir, open_run
from common.runtime import cleanup_distributed, dist_info, refuse_unsupported, setup_runtime
from common.tracking import Tracker, write_eval_tables
from joinedtrans.engine import stage_file
from joinedtrans.figures import write_run_figures
from joinedtrans.model import JoinedTrans, build_fine_model, build_fovea_model, build_model
from joinedtrans.pipeline import (
    PROJECT,
    DataBundle,
    coarse_predict,
    prepare_data,
    score_split,
    train_coarse,
    train_fine,
    train_fovea,
)
from joinedtrans.settings import Config

__all__ = ["PROJECT_DIR", "run_stage", "run_training", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def run_stage(name: str, run: RunDir, last: dict | None, build: Callable[[], nn.Module],
              train: Callable[[dict | None], nn.Module], device: torch.device) -> nn.Module:
    """A finished stage (``<name>.pt`` exists) is loaded; otherwise trained, resuming ``last`` when it belongs to
    this stage."""
    done = stage_file(run, name)
    if done.is_file():
        model = build().to(device)
        model.load_state_dict(load_checkpoint(done)["model"])
        print(f"[{name}] finished earlier: loaded {done}")
        return model
    resume = last if last is not None and last.get("extra", {}).get("stage") == name else None
    return train(resume)


def _stages(cfg: Config, data: DataBundle, run: RunDir, last: dict | None, device, tracker, init_weights):
    def coarse_train(resume):
        return train_coarse(cfg, data, run, device, tracker, resume, init_weights)

    c = cfg.coarse
    coarse = run_stage("coarse", run, last, lambda: build_model(cfg.model, c.size, c.heatmap, c.distance),
                       coarse_train, device)
    fine = fovea = None
    if cfg.fine.enabled or cfg.fovea.enabled:
        train_preds = coarse_predict(coarse, data.train, cfg, data.mean, data.std, device)
        if cfg.fine.enabled:
            val_preds = (coarse_predict(coarse, data.val, cfg, data.mean, data.std, device) if cfg.fine.val_every
                         else None)
            fine = run_stage("fine", run, last, lambda: build_fine_model(cfg.fine),
                             lambda r: train_fine(cfg, data, train_preds, run, device, tracker, r, val_preds),
                             device)
        if cfg.fovea.enabled and c.heatmap:
            fovea = run_stage("fovea", run, last, lambda: build_fovea_model(cfg.fovea),
                              lambda r: train_fovea(cfg, data, train_preds, run, device, tracker, r), device)
    return JoinedTrans(coarse, fine, fovea)


def run_training(cfg: Config, resume: str | None = None, init_weights: str | None = None) -> Path:
    """Train every enabled stage, save ``best.pt``, score ``eval.split``; returns the run folder."""
    refuse_unsupported(cfg.runtime, compile=False, project=PROJECT)
    device = setup_runtime(cfg.runtime, cfg.seed)
    data = prepare_data(cfg)  # every file checked before the run folder exists
    opened = open_run(PROJECT, cfg, resume=resume, device=device)
    run = opened.run
    last = load_checkpoint(opened.resume_from) if opened.resume_from is not None else None
    tracker = Tracker(run.path)
    pipe = _stages(cfg, data, run, last, device, tracker, init_weights)
    if dist_info().is_main:
        save_checkpoint(run.checkpoints / "best.pt", model=pipe, config=to_dict(cfg), epoch=0, step=0,
                        extra={"stage": "pipeline", "mean": data.mean, "std": data.std})
    items = data.test if cfg.eval.split == "test" else data.val
    summary, rows, _ = score_split(pipe, items, cfg, data.mean, data.std, device)
    tracker.log({f"{cfg.eval.split}/{k}": v for k, v in summary.items()}, step=0)
    tracker.close()
    if dist_info().is_main:
        write_eval_tables(run.eval, summary, rows)
        write_run_figures(pipe, items, rows, cfg, data, run, device)
        print(f"[{PROJECT}] {cfg.eval.split}: disc Dice {summary['dice_disc']:.3f}, cup Dice "
              f"{summary['dice_cup']:.3f}, vCDR MAE {summary['vcdr_mae']:.3f}, fovea dist/diag "
              f"{summary['fovea_dist_norm']:.4f} (coarse: {summary['coarse_dice_disc']:.3f} / "
              f"{summary['coarse_dice_cup']:.3f} / {summary['coarse_fovea_dist_norm']:.4f}); {run.path}")
    cleanup_distributed()
    return run.path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = train_parser("Train JOINEDTrans (coarse multi-task network, ROI fine stage, fovea refinement)")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    return run_training(cfg, args.resume, args.init_weights)

if __name__ == "__main__":
    main()
