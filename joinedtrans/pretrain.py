"""Pre-train the coarse encoder on retinal vessel segmentation (abstract: "an encoder pretrained in a vessel
segmentation task ... incorporating spatial prior"); the schedule and data are ours: the coarse encoder (Swin +
stem, or the CNN) + one UNet++ decoder + a 1-channel head on whole DRIVE/CHASE_DB1/HRF images at the coarse size,
Dice + BCE, DRIVE test held out (vessel Dice). ``pretrain.kind=denoise`` trains the same network for the same
budget to denoise the images instead (a generic prior of equal cost, for the ablation).

    python pretrain.py [--config configs/default.yaml] [--resume auto|PATH] [key=value ...]
    python train.py coarse.encoder_init=<run>/checkpoints/pretrain.pt      # or coarse.encoder_init=latest:<exp>

The encoder of ``checkpoints/pretrain.pt`` loads strictly into the coarse model's encoder (decoder dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.checkpoint import load_checkpoint
from common.cli import parse_train, train_parser
from common.rundir import open_run
from common.runtime import cleanup_distributed, refuse_unsupported, setup_runtime
from common.tracking import Tracker
from joinedtrans.pipeline import PROJECT, train_pretrain
from joinedtrans.settings import Config

__all__ = ["PROJECT_DIR", "run_pretraining", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def run_pretraining(cfg: Config, resume: str | None = None) -> Path:
    """Returns the path of ``checkpoints/pretrain.pt``."""
    refuse_unsupported(cfg.runtime, compile=False, project=PROJECT)
    device = setup_runtime(cfg.runtime, cfg.seed)
    opened = open_run(PROJECT, cfg, resume=resume, device=device)
    last = load_checkpoint(opened.resume_from) if opened.resume_from is not None else None
    done = opened.run.checkpoints / "pretrain.pt"
    if not done.is_file():
        with Tracker(opened.run.path) as tracker:
            train_pretrain(cfg, opened.run, device, tracker, last)
    print(f"[pretrain] encoder checkpoint {done}")
    cleanup_distributed()
    return done


def main(argv: Sequence[str] | None = None) -> Path:
    parser = train_parser("Pre-train the JOINEDTrans encoder on vessel segmentation (or denoising)")
    cfg, args = parse_train(Config, argv, parser, PROJECT_DIR)
    return run_pretraining(cfg, args.resume)


if __name__ == "__main__":
    main()
